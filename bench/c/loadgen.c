/* l2rx-loadgen: the C twin of bench/loadgen.py, for rates the Python generator cannot reach.
 *
 * Same traffic, same command line (the subset bench/run.py uses) and the same JSON on stdout, so
 * bench.run's run_generator reads either: L2TPv2 data messages with the S bit (Ns counted per
 * session, Nr 0), a PPP/IPv4 prefix, the bench/marker.py trailer at the end (magic, kind,
 * session index, per-session seq, send time in CLOCK_REALTIME ns), a cycle in which every session
 * appears per_session times in a shuffled order that keeps each session's own order, with
 * planned adjacent swaps and losses (build_plan below follows bench/loadgen.py's rules), one
 * warm-up packet per session first, paced batches sent with UDP GSO or sendmmsg.
 *
 * Why C: the Python generator tops out near 150-200k datagrams/s on one core, below what the
 * in-path reader can take, so the in-path searches were harness bound. Here the per-packet work
 * is three stores into a prebuilt buffer; the kernel's send path is the cost.
 *
 * Built by bench/cbuild.py with gcc (-O2, no libraries). Loopback targets only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

enum kind { NORMAL, EARLY, LATE, AFTER_GAP, BEHIND_GAP, WARMUP, KINDS };
static const char *const KIND_NAMES[KINDS] = {"NORMAL", "EARLY", "LATE",
                                              "AFTER_GAP", "BEHIND_GAP", "WARMUP"};

#define MAGIC 0xB3C7
#define TRAILER_SIZE 20 /* !HBxIIQ */
#define HEADER_SIZE 10  /* flags/ver, tunnel_id, session_id, Ns, Nr */
#define NS_OFFSET 6
#define CYCLE_TARGET 65536
#define MAX_GSO_SEGMENTS 64
#define MAX_BATCH 1024

struct args {
    char host[64];
    int port;
    long sessions, count, size, batch, base_tunnel;
    double rate, duration, swaps, loss, hold_window, warmup_rate, settle;
    int warmup, gso;
    uint64_t seed;
};

struct slot { /* one datagram of the cycle, in send order */
    uint32_t session;
    uint32_t k; /* the session's packet within the cycle */
    uint8_t kind;
};

/* splitmix64: small, seedable, good enough to shuffle a send order */
static uint64_t rng_state;
static double rng_double(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p)
        die("calloc");
    return p;
}

static int64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t mono_ns) {
    struct timespec ts = {mono_ns / 1000000000LL, mono_ns % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void put16(uint8_t *p, uint32_t v) { p[0] = v >> 8; p[1] = v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v & 0xFFFF); }
static void put64(uint8_t *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, (uint32_t)v); }

/* The per-session units of one cycle (a unit = 1 packet, or a swapped pair sent EARLY then
 * LATE), then a shuffled order of units that keeps each session's own order. Same rules as
 * bench/loadgen.py build_plan: a planned loss makes the next packet AFTER_GAP and keeps the hold
 * window after it free of other swaps and losses. Returns the number of slots written. */
static size_t build_plan(const struct args *a, long per_session, long window, struct slot *plan) {
    double pair_p = a->swaps < 1 ? a->swaps / (1.0 - a->swaps) : 1.0;
    long n = a->sessions;
    /* units per session <= per_session; unit u of session s: first slot, length */
    uint32_t *unit_k = xmalloc(sizeof(uint32_t) * n * per_session);
    uint8_t *unit_kind = xmalloc((size_t)n * per_session); /* kind of the unit's first packet */
    long *units = xmalloc(sizeof(long) * n);
    long total_units = 0;
    for (long s = 0; s < n; s++) {
        long k = 0, quiet_until = 0, behind_until = -1, u = 0;
        uint32_t *uk = unit_k + s * per_session;
        uint8_t *ukind = unit_kind + s * per_session;
        while (k < per_session) {
            double r = rng_double();
            if (k >= quiet_until && k + window + 2 < per_session && r < a->loss) {
                uk[u] = k + 1; /* k is lost */
                ukind[u++] = AFTER_GAP;
                behind_until = k + 1 + window;
                quiet_until = behind_until + 1;
                k += 2;
            } else if (k >= quiet_until && k + 1 < per_session && r < a->loss + pair_p) {
                uk[u] = k; /* sent as k+1 (EARLY) then k (LATE) */
                ukind[u++] = EARLY;
                k += 2;
            } else {
                uk[u] = k;
                ukind[u++] = k <= behind_until ? BEHIND_GAP : NORMAL;
                k += 1;
            }
        }
        units[s] = u;
        total_units += u;
    }
    uint32_t *order = xmalloc(sizeof(uint32_t) * total_units);
    long at = 0;
    for (long s = 0; s < n; s++)
        for (long u = 0; u < units[s]; u++)
            order[at++] = (uint32_t)s;
    for (long i = total_units - 1; i > 0; i--) { /* Fisher-Yates */
        long j = (long)(rng_double() * (double)(i + 1));
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    long *cursor = xmalloc(sizeof(long) * n);
    size_t out = 0;
    for (long i = 0; i < total_units; i++) {
        uint32_t s = order[i];
        long u = cursor[s]++;
        uint32_t k = unit_k[s * per_session + u];
        uint8_t kind = unit_kind[s * per_session + u];
        if (kind == EARLY) {
            plan[out++] = (struct slot){s, k + 1, EARLY};
            plan[out++] = (struct slot){s, k, LATE};
        } else {
            plan[out++] = (struct slot){s, k, kind};
        }
    }
    free(unit_k);
    free(unit_kind);
    free(units);
    free(order);
    free(cursor);
    return out;
}

/* The constant bytes of datagram `at`: L2TP header (Ns 0), PPP/IPv4 prefix, zero payload, and
 * the trailer with seq and time 0 (patched per send). */
static void write_datagram(uint8_t *p, long size, uint32_t index, uint8_t kind, long base_tunnel) {
    static const uint8_t ppp_ipv4[4] = {0xFF, 0x03, 0x00, 0x21};
    memset(p, 0, size);
    put16(p, 0x0802); /* T=0 L=0 S=1, version 2 */
    put16(p + 2, (uint32_t)(base_tunnel + index / 65535));
    put16(p + 4, index % 65535 + 1);
    long body = size - HEADER_SIZE - TRAILER_SIZE;
    memcpy(p + HEADER_SIZE, ppp_ipv4, body < 4 ? body : 4);
    uint8_t *t = p + size - TRAILER_SIZE;
    put16(t, MAGIC);
    t[2] = kind;
    put32(t + 4, index);
}

static void patch(uint8_t *p, long size, uint32_t seq, uint64_t tx_ns) {
    put16(p + NS_OFFSET, seq & 0xFFFF);
    put32(p + size - 12, seq);
    put64(p + size - 8, tx_ns);
}

struct sender {
    int fd, gso;
    long size, refused;
    struct mmsghdr hdrs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
};

/* Send `count` consecutive datagrams starting at p: GSO super-datagrams of up to 64 segments,
 * or sendmmsg. A refused send (ICMP port unreachable from an earlier one) is counted, retried. */
static void send_run(struct sender *s, uint8_t *p, long count) {
    long size = s->size;
    while (count > 0) {
        if (s->gso) {
            long n = count < MAX_GSO_SEGMENTS ? count : MAX_GSO_SEGMENTS;
            if (n * size > 65000)
                n = 65000 / size > 0 ? 65000 / size : 1;
            struct iovec iov = {p, (size_t)(n * size)};
            char ctrl[CMSG_SPACE(sizeof(uint16_t))];
            struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
            if (n > 1) {
                memset(ctrl, 0, sizeof ctrl);
                msg.msg_control = ctrl;
                msg.msg_controllen = sizeof ctrl;
                struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_UDP;
                c->cmsg_type = UDP_SEGMENT;
                c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                uint16_t seg = (uint16_t)size;
                memcpy(CMSG_DATA(c), &seg, sizeof seg);
            }
            if (sendmsg(s->fd, &msg, 0) < 0) {
                if (errno == ECONNREFUSED) {
                    s->refused++;
                    continue;
                }
                if (errno == EINTR || errno == EAGAIN || errno == ENOBUFS)
                    continue;
                die("sendmsg");
            }
            p += n * size;
            count -= n;
        } else {
            long n = count < MAX_BATCH ? count : MAX_BATCH;
            for (long i = 0; i < n; i++) {
                s->iov[i].iov_base = p + i * size;
                s->iov[i].iov_len = size;
                memset(&s->hdrs[i], 0, sizeof s->hdrs[i]);
                s->hdrs[i].msg_hdr.msg_iov = &s->iov[i];
                s->hdrs[i].msg_hdr.msg_iovlen = 1;
            }
            int done = sendmmsg(s->fd, s->hdrs, (unsigned)n, 0);
            if (done < 0) {
                if (errno == ECONNREFUSED) {
                    s->refused++;
                    continue;
                }
                if (errno == EINTR || errno == EAGAIN || errno == ENOBUFS)
                    continue;
                die("sendmmsg");
            }
            p += done * size;
            count -= done;
        }
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: l2rx-loadgen --target 127.0.0.1:PORT [--sessions N] [--rate PPS (0 = max)]\n"
            "  [--duration S] [--count N] [--size BYTES] [--swaps F] [--loss F]\n"
            "  [--hold-window S] [--batch N] [--base-tunnel N] [--no-warmup]\n"
            "  [--warmup-rate PPS] [--settle S] [--mode auto|gso|sendmmsg] [--seed N]\n");
    exit(2);
}

static void parse_args(int argc, char **argv, struct args *a) {
    static const struct option opts[] = {
        {"target", 1, 0, 't'},      {"sessions", 1, 0, 's'},    {"rate", 1, 0, 'r'},
        {"duration", 1, 0, 'd'},    {"count", 1, 0, 'c'},       {"size", 1, 0, 'z'},
        {"swaps", 1, 0, 'w'},       {"loss", 1, 0, 'l'},        {"hold-window", 1, 0, 'h'},
        {"batch", 1, 0, 'b'},       {"base-tunnel", 1, 0, 'T'}, {"no-warmup", 0, 0, 'W'},
        {"warmup-rate", 1, 0, 'R'}, {"settle", 1, 0, 'S'},      {"mode", 1, 0, 'm'},
        {"seed", 1, 0, 'e'},        {0, 0, 0, 0}};
    *a = (struct args){.sessions = 100, .size = 100, .base_tunnel = 1, .rate = 10000,
                       .duration = 2.0, .hold_window = 0.1, .warmup_rate = 20000,
                       .settle = 0.2, .warmup = 1, .gso = -1, .seed = 6};
    const char *target = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't': target = optarg; break;
        case 's': a->sessions = atol(optarg); break;
        case 'r': a->rate = atof(optarg); break;
        case 'd': a->duration = atof(optarg); break;
        case 'c': a->count = atol(optarg); break;
        case 'z': a->size = atol(optarg); break;
        case 'w': a->swaps = atof(optarg); break;
        case 'l': a->loss = atof(optarg); break;
        case 'h': a->hold_window = atof(optarg); break;
        case 'b': a->batch = atol(optarg); break;
        case 'T': a->base_tunnel = atol(optarg); break;
        case 'W': a->warmup = 0; break;
        case 'R': a->warmup_rate = atof(optarg); break;
        case 'S': a->settle = atof(optarg); break;
        case 'e': a->seed = strtoull(optarg, NULL, 10); break;
        case 'm':
            a->gso = !strcmp(optarg, "gso") ? 1 : !strcmp(optarg, "sendmmsg") ? 0 : -1;
            if (a->gso == -1 && strcmp(optarg, "auto"))
                usage();
            break;
        default: usage();
        }
    }
    const char *colon = target ? strrchr(target, ':') : NULL;
    if (!colon || colon - target >= (long)sizeof a->host)
        usage();
    memcpy(a->host, target, colon - target);
    a->port = atoi(colon + 1);
    if (strncmp(a->host, "127.", 4) && strcmp(a->host, "localhost")) {
        fprintf(stderr, "--target %s: loopback only\n", target);
        exit(2);
    }
    if (!strcmp(a->host, "localhost"))
        strcpy(a->host, "127.0.0.1");
    if (a->size < HEADER_SIZE + TRAILER_SIZE || a->size > 1400 || a->sessions < 1 ||
        a->batch < 0 || a->batch > MAX_BATCH || a->warmup_rate <= 0) {
        fprintf(stderr, "bad --size (30..1400), --sessions, --batch (0..%d) or --warmup-rate\n",
                MAX_BATCH);
        exit(2);
    }
}

static int open_socket(struct args *a) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        die("socket");
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(a->port)};
    if (inet_pton(AF_INET, a->host, &dst.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", a->host);
        exit(2);
    }
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0)
        die("connect");
    if (a->gso == -1) { /* auto: GSO when the kernel has it (Linux >= 4.18) */
        int seg = (int)a->size;
        a->gso = setsockopt(fd, SOL_UDP, UDP_SEGMENT, &seg, sizeof seg) == 0;
        seg = 0;
        setsockopt(fd, SOL_UDP, UDP_SEGMENT, &seg, sizeof seg);
    }
    return fd;
}

/* One seq-0 packet per session, in batches of 8 at --warmup-rate, then --settle. */
static long warm_up(struct sender *snd, const struct args *a) {
    uint8_t *buf = xmalloc((size_t)a->sessions * a->size);
    for (long s = 0; s < a->sessions; s++)
        write_datagram(buf + s * a->size, a->size, (uint32_t)s, WARMUP, a->base_tunnel);
    int64_t gap = (int64_t)(8 / a->warmup_rate * 1e9), t_next = now_ns(CLOCK_MONOTONIC);
    long sent = 0;
    for (long s = 0; s < a->sessions; s += 8) {
        long n = a->sessions - s < 8 ? a->sessions - s : 8;
        sleep_until(t_next);
        uint64_t tx = (uint64_t)now_ns(CLOCK_REALTIME);
        for (long i = 0; i < n; i++)
            patch(buf + (s + i) * a->size, a->size, 0, tx);
        send_run(snd, buf + s * a->size, n);
        sent += n;
        t_next += gap;
    }
    free(buf);
    sleep_until(now_ns(CLOCK_MONOTONIC) + (int64_t)(a->settle * 1e9));
    return sent;
}

int main(int argc, char **argv) {
    struct args a;
    parse_args(argc, argv, &a);
    rng_state = a.seed;
    long per_session = CYCLE_TARGET / a.sessions > 4 ? CYCLE_TARGET / a.sessions : 4;
    double per_session_rate = a.rate > 0 ? a.rate / a.sessions : 0.0;
    long window = a.loss > 0 ? (long)(a.hold_window * per_session_rate) + 2 : 0;
    if (a.loss > 0 && window + 4 >= per_session)
        per_session = window + 8;
    struct slot *plan = xmalloc(sizeof(struct slot) * a.sessions * per_session);
    size_t cycle = build_plan(&a, per_session, window, plan);
    long size = a.size;
    uint8_t *ring = xmalloc(cycle * size);
    uint32_t *delta = xmalloc(sizeof(uint32_t) * cycle);
    for (size_t i = 0; i < cycle; i++) {
        write_datagram(ring + i * size, size, plan[i].session, plan[i].kind, a.base_tunnel);
        delta[i] = 1 + plan[i].k; /* seq = cycles * per_session + 1 + k (seq 0 = warm-up) */
    }
    struct sender *snd = xmalloc(sizeof *snd);
    snd->fd = open_socket(&a);
    snd->gso = a.gso;
    snd->size = size;
    long warmup_sent = a.warmup ? warm_up(snd, &a) : 0;

    long batch = a.batch;
    if (!batch) /* about one batch per 0.5 ms, as bench/loadgen.py auto_batch */
        batch = a.rate <= 0 ? MAX_GSO_SEGMENTS : (long)(a.rate * 0.0005 + 0.5);
    batch = batch < 1 ? 1 : batch > MAX_GSO_SEGMENTS && !a.batch ? MAX_GSO_SEGMENTS : batch;
    int64_t interval = a.rate > 0 ? (int64_t)(batch / a.rate * 1e9) : 0;
    long limit = a.count ? a.count : (1L << 62);
    long sent = 0, cycles = 0, kinds[KINDS] = {0};
    size_t pos = 0;
    int64_t start = now_ns(CLOCK_MONOTONIC), end = start + (int64_t)(a.duration * 1e9);
    int64_t t_next = start, max_lag = 0;
    while (sent < limit) {
        int64_t now = now_ns(CLOCK_MONOTONIC);
        if (now >= end)
            break;
        if (interval) {
            if (t_next > now)
                sleep_until(t_next);
            else if (now - t_next > max_lag)
                max_lag = now - t_next;
            t_next += interval;
        }
        long n = batch < limit - sent ? batch : limit - sent;
        uint64_t tx = (uint64_t)now_ns(CLOCK_REALTIME);
        while (n > 0) {
            long take = (long)(cycle - pos) < n ? (long)(cycle - pos) : n;
            uint32_t base = (uint32_t)(cycles * per_session);
            for (long i = 0; i < take; i++) {
                patch(ring + (pos + i) * size, size, base + delta[pos + i], tx);
                kinds[plan[pos + i].kind]++;
            }
            send_run(snd, ring + pos * size, take);
            pos += take;
            n -= take;
            sent += take;
            if (pos == cycle) {
                pos = 0;
                cycles++;
            }
        }
    }
    double elapsed = (now_ns(CLOCK_MONOTONIC) - start) / 1e9;
    close(snd->fd);

    printf("{\"generator\": \"c\", \"target\": \"%s:%d\", \"mode\": \"%s\", \"sessions\": %ld, "
           "\"size\": %ld, \"offered_pps\": %.17g, \"batch\": %ld, \"sent\": %ld, "
           "\"warmup_sent\": %ld, \"elapsed_s\": %.9f, \"achieved_pps\": %.3f, "
           "\"max_lag_s\": %.9f, \"kinds\": {",
           a.host, a.port, a.gso ? "gso" : "sendmmsg", a.sessions, size, a.rate, batch, sent,
           warmup_sent, elapsed, elapsed > 0 ? sent / elapsed : 0.0, max_lag / 1e9);
    const char *sep = "";
    for (int k = 0; k < KINDS; k++) {
        if (kinds[k]) {
            printf("%s\"%s\": %ld", sep, KIND_NAMES[k], kinds[k]);
            sep = ", ";
        }
    }
    size_t last = pos ? pos - 1 : cycle - 1;
    printf("}, \"intended_lost\": %ld, \"split_pair_at_end\": %d, \"cycle_len\": %zu, "
           "\"per_session_per_cycle\": %ld, \"cycles\": %ld, \"hold_window_packets\": %ld, "
           "\"refused\": %ld}\n",
           kinds[AFTER_GAP], sent > 0 && plan[last].kind == EARLY, cycle, per_session, cycles,
           window, snd->refused);
    return 0;
}
