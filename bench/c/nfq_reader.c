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
#include <sys/time.h>
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
    long packets, batches, sends, bytes, truncated, truncated_reads;
    long pending;      /* packets whose verdict is not sent yet */
    uint32_t last_id;  /* the last pending packet's id (the batch verdict's) */
    size_t out_len;    /* bytes of per-packet verdict messages in out */
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

#define PACKET_MSG ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)

/* One queued packet: copy it whole and count it; in per-packet mode append its ACCEPT verdict to
 * r->out (sending what is there first when it is full: a read batch never overruns it). */
static void handle_packet(struct reader *r, struct nlmsghdr *nh);

/* The verdicts pending since the last send, in one send(): the per-packet messages in r->out,
 * or one NFQNL_MSG_VERDICT_BATCH up to the last packet id. */
static void flush(struct reader *r) {
    if (!r->pending)
        return;
    if (r->batch_verdict) {
        r->out_len = put_header(r->out, NFQNL_MSG_VERDICT_BATCH, 0, r->queue, 0);
        struct nfqnl_msg_verdict_hdr v = {.verdict = htonl(NF_ACCEPT), .id = htonl(r->last_id)};
        r->out_len = put_attr(r->out, r->out_len, NFQA_VERDICT_HDR, &v, sizeof v);
    }
    while (send(r->fd, r->out, r->out_len, 0) < 0) {
        if (errno != EINTR && errno != ENOBUFS && errno != EAGAIN)
            die("send verdicts");
    }
    r->sends++;
    r->out_len = 0;
    r->pending = 0;
}

/* The netlink messages of one received datagram of `len` bytes: packets are handled; returns the
 * error of the ACK for ack_seq if there is one (0 = success), else 1. The length is signed and the
 * walk stops at the last message: the kernel does not pad a packet message to 4 bytes, so an
 * unsigned `len -= NLMSG_ALIGN(nlmsg_len)` would wrap and walk stale bytes of the slot. */
static int walk(struct reader *r, uint8_t *buf, long len, uint32_t ack_seq) {
    int ack = 1;
    while (len >= (long)NLMSG_HDRLEN) {
        struct nlmsghdr *nh = (struct nlmsghdr *)buf;
        if (nh->nlmsg_len < NLMSG_HDRLEN || (long)nh->nlmsg_len > len)
            break;
        if (nh->nlmsg_type == PACKET_MSG)
            handle_packet(r, nh);
        else if (nh->nlmsg_type == NLMSG_ERROR && ack_seq && nh->nlmsg_seq == ack_seq
                 && nh->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr)))
            ack = ((struct nlmsgerr *)NLMSG_DATA(nh))->error;
        long step = (long)NLMSG_ALIGN(nh->nlmsg_len);
        if (step >= len)
            break;
        buf += step;
        len -= step;
    }
    return ack;
}

/* Bind the queue and set copy mode, maxlen and fail-open in ONE config message (the kernel's
 * nfqnl_recv_config applies NFQA_CFG_CMD, then PARAMS, QUEUE_MAXLEN and FLAGS of one message),
 * so no packet is queued under the kernel's defaults between requests; packets that arrive
 * before the ACK are handled (verdicts sent), not discarded. */
static void configure(struct reader *r, uint32_t maxlen, int fail_open) {
    uint8_t buf[256];
    size_t len = put_header(buf, NFQNL_MSG_CONFIG, NLM_F_ACK, r->queue, ++r->seq);
    struct nfqnl_msg_config_cmd cmd = {.command = NFQNL_CFG_CMD_BIND};
    len = put_attr(buf, len, NFQA_CFG_CMD, &cmd, sizeof cmd);
    struct nfqnl_msg_config_params params = {.copy_range = htonl(SLOT_SIZE - 512),
                                             .copy_mode = NFQNL_COPY_PACKET};
    len = put_attr(buf, len, NFQA_CFG_PARAMS, &params, sizeof params);
    uint32_t be_maxlen = htonl(maxlen);
    len = put_attr(buf, len, NFQA_CFG_QUEUE_MAXLEN, &be_maxlen, 4);
    if (fail_open) {
        uint32_t flag = htonl(NFQA_CFG_F_FAIL_OPEN);
        len = put_attr(buf, len, NFQA_CFG_FLAGS, &flag, 4);
        len = put_attr(buf, len, NFQA_CFG_MASK, &flag, 4);
    }
    if (send(r->fd, buf, len, 0) < 0)
        die("configure queue");
    for (;;) {
        struct msghdr msg = {.msg_iov = &r->iov[0], .msg_iovlen = 1};
        ssize_t n = recvmsg(r->fd, &msg, 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
                continue;
            die("configure queue");
        }
        if (msg.msg_flags & MSG_TRUNC) {
            r->truncated_reads++;
            continue;
        }
        int err = walk(r, r->iov[0].iov_base, (long)n, r->seq);
        flush(r);
        if (err == 1)
            continue;
        if (err) {
            errno = -err;
            die("configure queue");
        }
        return;
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
    /* A SIGTERM that lands between the stop check and recvmmsg is seen within 100 ms. */
    struct timeval tick = {.tv_sec = 0, .tv_usec = 100000};
    if (setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof tick) < 0)
        die("SO_RCVTIMEO");
    r->slots = malloc((size_t)SLOTS * SLOT_SIZE);
    if (!r->slots)
        die("malloc");
    for (int i = 0; i < SLOTS; i++) {
        r->iov[i] = (struct iovec){r->slots + (size_t)i * SLOT_SIZE, SLOT_SIZE};
        r->hdrs[i].msg_hdr = (struct msghdr){.msg_iov = &r->iov[i], .msg_iovlen = 1};
    }
    configure(r, maxlen, fail_open);
}

static void handle_packet(struct reader *r, struct nlmsghdr *nh) {
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
        return;
    r->packets++;
    r->pending++;
    r->last_id = id;
    if (r->batch_verdict)
        return;
    if (r->out_len + VERDICT_LEN > sizeof r->out)
        flush(r);
    uint8_t *msg = r->out + r->out_len;
    size_t len = put_header(msg, NFQNL_MSG_VERDICT, 0, r->queue, 0);
    struct nfqnl_msg_verdict_hdr v = {.verdict = htonl(NF_ACCEPT), .id = htonl(id)};
    len = put_attr(msg, len, NFQA_VERDICT_HDR, &v, sizeof v);
    r->out_len += len;
}

static void run(struct reader *r) {
    while (!stop) {
        int n = recvmmsg(r->fd, r->hdrs, SLOTS, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
                continue;
            die("recvmmsg");
        }
        long before = r->packets;
        for (int i = 0; i < n; i++) {
            if (r->hdrs[i].msg_hdr.msg_flags & MSG_TRUNC) { /* a partial message: not walked */
                r->truncated_reads++;
                continue;
            }
            walk(r, r->iov[i].iov_base, (long)r->hdrs[i].msg_len, 0);
        }
        if (r->packets == before)
            continue;
        r->batches++;
        flush(r);
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
           "\"verdicts\": \"%s\", \"bytes_copied\": %ld, \"truncated\": %ld, "
           "\"truncated_reads\": %ld}\n",
           r.queue, r.packets, r.batches, r.sends,
           r.batch_verdict ? "one batch verdict per read batch"
                           : "one verdict message per packet, one send per read batch",
           r.bytes, r.truncated, r.truncated_reads);
    return 0;
}
