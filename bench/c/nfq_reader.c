/* l2rx-nfq-reader: the in-path ceiling, a minimal NFQUEUE reader in C (bench/run.py's
 * `inpath/ceiling` anchor).
 *
 * It does what l2tpreorder's in-path mode must do at the least per packet, and nothing else:
 * bind one queue in copy-packet mode (the same maxlen, receive buffer and fail-open flag the
 * daemon asks for), read the queued packets in batches (recvmmsg), copy each whole packet out of
 * the receive buffer, and ACCEPT it with its own NFQNL_MSG_VERDICT message; the verdict messages
 * of one read batch go to the kernel in one send(). So its clean rate is what the kernel's queue
 * path allows on this machine; the daemon's distance from it is the cost of the daemon's own
 * per-packet work. No libmnl/libnetfilter_queue: raw netlink with the uapi headers.
 *
 * Runs until SIGTERM/SIGINT, then prints one JSON line: packets, batches, verdict sends.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 64
#define SLOT_SIZE 65536
#define VERDICT_LEN (NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg)) + NLA_HDRLEN + \
                     NLA_ALIGN(sizeof(struct nfqnl_msg_verdict_hdr)))

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

struct reader {
    int fd;
    uint16_t queue;
    uint32_t seq;
    int batch_verdict; /* 1: one NFQNL_MSG_VERDICT_BATCH per read batch instead */
    long packets, batches, sends, bytes, truncated;
    uint8_t *slots, copy[SLOT_SIZE];
    struct mmsghdr hdrs[SLOTS];
    struct iovec iov[SLOTS];
    uint8_t out[SLOTS * VERDICT_LEN];
};

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* nlmsghdr + nfgenmsg for the queue subsystem at buf; returns the length written. */
static size_t put_header(uint8_t *buf, uint16_t msg, uint16_t flags, uint16_t queue, uint32_t seq) {
    struct nlmsghdr *nh = (struct nlmsghdr *)buf;
    nh->nlmsg_len = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
    nh->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | msg;
    nh->nlmsg_flags = NLM_F_REQUEST | flags;
    nh->nlmsg_seq = seq;
    nh->nlmsg_pid = 0;
    struct nfgenmsg *g = (struct nfgenmsg *)(buf + NLMSG_HDRLEN);
    g->nfgen_family = AF_UNSPEC;
    g->version = NFNETLINK_V0;
    g->res_id = htons(queue);
    return nh->nlmsg_len;
}

static size_t put_attr(uint8_t *buf, size_t at, uint16_t type, const void *data, size_t len) {
    struct nlattr *a = (struct nlattr *)(buf + at);
    a->nla_len = (uint16_t)(NLA_HDRLEN + len);
    a->nla_type = type;
    memcpy(buf + at + NLA_HDRLEN, data, len);
    size_t end = at + NLA_ALIGN(NLA_HDRLEN + len);
    memset(buf + at + NLA_HDRLEN + len, 0, end - at - NLA_HDRLEN - len);
    ((struct nlmsghdr *)buf)->nlmsg_len = (uint32_t)end;
    return end;
}

/* One config request with attributes, and wait for the kernel's ACK (fail on an error). */
static void configure(struct reader *r, const char *what, uint16_t t1, const void *d1, size_t l1,
                      uint16_t t2, const void *d2, size_t l2) {
    uint8_t buf[256];
    size_t len = put_header(buf, NFQNL_MSG_CONFIG, NLM_F_ACK, r->queue, ++r->seq);
    len = put_attr(buf, len, t1, d1, l1);
    if (d2)
        len = put_attr(buf, len, t2, d2, l2);
    if (send(r->fd, buf, len, 0) < 0)
        die(what);
    uint8_t reply[8192];
    for (;;) {
        ssize_t n = recv(r->fd, reply, sizeof reply, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die(what);
        }
        for (struct nlmsghdr *nh = (struct nlmsghdr *)reply; NLMSG_OK(nh, (size_t)n);
             nh = NLMSG_NEXT(nh, n)) {
            if (nh->nlmsg_type == NLMSG_ERROR && nh->nlmsg_seq == r->seq) {
                int err = ((struct nlmsgerr *)NLMSG_DATA(nh))->error;
                if (err) {
                    errno = -err;
                    die(what);
                }
                return;
            }
        }
    }
}

static void setup(struct reader *r, uint32_t maxlen, int rcvbuf, int fail_open) {
    r->fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
    if (r->fd < 0)
        die("socket(NETLINK_NETFILTER)");
    struct sockaddr_nl local = {.nl_family = AF_NETLINK};
    if (bind(r->fd, (struct sockaddr *)&local, sizeof local) < 0)
        die("bind");
    if (setsockopt(r->fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int one = 1;
    setsockopt(r->fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
    struct nfqnl_msg_config_cmd cmd = {.command = NFQNL_CFG_CMD_BIND};
    configure(r, "bind queue", NFQA_CFG_CMD, &cmd, sizeof cmd, 0, NULL, 0);
    struct nfqnl_msg_config_params params = {.copy_range = htonl(SLOT_SIZE - 512),
                                             .copy_mode = NFQNL_COPY_PACKET};
    configure(r, "copy mode", NFQA_CFG_PARAMS, &params, sizeof params, 0, NULL, 0);
    uint32_t be_maxlen = htonl(maxlen);
    configure(r, "queue maxlen", NFQA_CFG_QUEUE_MAXLEN, &be_maxlen, 4, 0, NULL, 0);
    if (fail_open) {
        uint32_t flag = htonl(NFQA_CFG_F_FAIL_OPEN);
        configure(r, "fail-open", NFQA_CFG_FLAGS, &flag, 4, NFQA_CFG_MASK, &flag, 4);
    }
    r->slots = malloc((size_t)SLOTS * SLOT_SIZE);
    if (!r->slots)
        die("malloc");
    for (int i = 0; i < SLOTS; i++) {
        r->iov[i] = (struct iovec){r->slots + (size_t)i * SLOT_SIZE, SLOT_SIZE};
        r->hdrs[i].msg_hdr = (struct msghdr){.msg_iov = &r->iov[i], .msg_iovlen = 1};
    }
}

/* One queued packet: copy it whole, append its ACCEPT verdict; returns the new out length. */
static size_t handle_packet(struct reader *r, struct nlmsghdr *nh, size_t out_len,
                            uint32_t *last_id) {
    uint8_t *attrs = (uint8_t *)NLMSG_DATA(nh) + NLMSG_ALIGN(sizeof(struct nfgenmsg));
    int left = (int)nh->nlmsg_len - (int)(attrs - (uint8_t *)nh);
    uint32_t id = 0;
    int have_id = 0;
    for (struct nlattr *a = (struct nlattr *)attrs; left >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN
         && a->nla_len <= left; left -= NLA_ALIGN(a->nla_len),
         a = (struct nlattr *)((uint8_t *)a + NLA_ALIGN(a->nla_len))) {
        uint16_t type = a->nla_type & NLA_TYPE_MASK;
        uint8_t *data = (uint8_t *)a + NLA_HDRLEN;
        size_t len = a->nla_len - NLA_HDRLEN;
        if (type == NFQA_PACKET_HDR && len >= sizeof(struct nfqnl_msg_packet_hdr)) {
            id = ntohl(((struct nfqnl_msg_packet_hdr *)data)->packet_id);
            have_id = 1;
        } else if (type == NFQA_PAYLOAD) {
            memcpy(r->copy, data, len); /* the whole packet, as the daemon gets it */
            r->bytes += (long)len;
        } else if (type == NFQA_CAP_LEN) {
            r->truncated++;
        }
    }
    if (!have_id)
        return out_len;
    r->packets++;
    *last_id = id;
    if (r->batch_verdict)
        return out_len;
    uint8_t *msg = r->out + out_len;
    size_t len = put_header(msg, NFQNL_MSG_VERDICT, 0, r->queue, 0);
    struct nfqnl_msg_verdict_hdr v = {.verdict = htonl(NF_ACCEPT), .id = htonl(id)};
    len = put_attr(msg, len, NFQA_VERDICT_HDR, &v, sizeof v);
    return out_len + len;
}

static void send_all(struct reader *r, size_t len) {
    while (send(r->fd, r->out, len, 0) < 0) {
        if (errno != EINTR && errno != ENOBUFS && errno != EAGAIN)
            die("send verdicts");
    }
    r->sends++;
}

static void run(struct reader *r) {
    while (!stop) {
        int n = recvmmsg(r->fd, r->hdrs, SLOTS, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ENOBUFS)
                continue;
            die("recvmmsg");
        }
        size_t out_len = 0;
        uint32_t last_id = 0;
        long before = r->packets;
        for (int i = 0; i < n; i++) {
            size_t len = r->hdrs[i].msg_len;
            for (struct nlmsghdr *nh = (struct nlmsghdr *)r->iov[i].iov_base; NLMSG_OK(nh, len);
                 nh = NLMSG_NEXT(nh, len)) {
                if (nh->nlmsg_type == ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET))
                    out_len = handle_packet(r, nh, out_len, &last_id);
            }
        }
        if (r->packets == before)
            continue;
        r->batches++;
        if (r->batch_verdict) {
            out_len = put_header(r->out, NFQNL_MSG_VERDICT_BATCH, 0, r->queue, 0);
            struct nfqnl_msg_verdict_hdr v = {.verdict = htonl(NF_ACCEPT), .id = htonl(last_id)};
            out_len = put_attr(r->out, out_len, NFQA_VERDICT_HDR, &v, sizeof v);
        }
        send_all(r, out_len);
    }
}

int main(int argc, char **argv) {
    static const struct option opts[] = {{"queue", 1, 0, 'q'},    {"maxlen", 1, 0, 'm'},
                                         {"rcvbuf", 1, 0, 'b'},   {"no-fail-open", 0, 0, 'F'},
                                         {"batch-verdict", 0, 0, 'B'}, {0, 0, 0, 0}};
    static struct reader r;
    uint32_t maxlen = 65536;
    int rcvbuf = 64 << 20, fail_open = 1, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'q': r.queue = (uint16_t)atoi(optarg); break;
        case 'm': maxlen = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'b': rcvbuf = atoi(optarg); break;
        case 'F': fail_open = 0; break;
        case 'B': r.batch_verdict = 1; break;
        default:
            fprintf(stderr, "usage: l2rx-nfq-reader [--queue N] [--maxlen N] [--rcvbuf BYTES] "
                            "[--no-fail-open] [--batch-verdict]\n");
            return 2;
        }
    }
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: recvmmsg returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    setup(&r, maxlen, rcvbuf, fail_open);
    fprintf(stderr, "l2rx-nfq-reader: queue %u bound\n", r.queue);
    run(&r);
    printf("{\"queue\": %u, \"packets\": %ld, \"batches\": %ld, \"verdict_sends\": %ld, "
           "\"verdicts\": \"%s\", \"bytes_copied\": %ld, \"truncated\": %ld}\n",
           r.queue, r.packets, r.batches, r.sends,
           r.batch_verdict ? "one batch verdict per read batch"
                           : "one verdict message per packet, one send per read batch",
           r.bytes, r.truncated);
    return 0;
}
