/*
 * agiload: the Asterisk side of scripts/bench_agi.py, in C as Asterisk's res_agi is.
 *
 * The Python client costs ~400 µs of CPU per screen, about as much as the server it measures, and this
 * machine has two cores: at 2,000 screens/s it would take most of a core from the server. This one does
 * the same wire work (connect, write the recorded request, answer "200 result=1" to every line, until
 * the server closes) at a small fraction of that. bench_agi.py compiles it with gcc when it can and
 * falls back to its Python client otherwise; both print their CPU per screen.
 *
 *   agiload HOST PORT REQUESTS MODE CONCURRENCY RATE SECONDS OUT
 *     REQUESTS  file of requests, each ending with its blank line ("\n\n"); used round-robin
 *     MODE      closed: CONCURRENCY sessions back to back for SECONDS
 *               open:   RATE*SECONDS sessions started at RATE/s, at most CONCURRENCY open at once
 *     OUT       one line per finished session: "<latency µs> <verdict set>", or
 *               "error <reason>"; a last line "#cpu_us <user+system µs of this process>"
 * Latency is from the request written to the first line read, as in the Python client.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_ 2048  /* res_agi's AGI_BUF_LEN */

typedef struct {
    int fd;
    int connected;
    int got_first;
    size_t line_len;
    char line[LINE_MAX_];
    char verdict[32];
    double t0;
    double latency;
} session_t;

static struct sockaddr_in addr;
static int ep;
static char **reqs;
static size_t *req_lens;
static size_t nreqs, next_req;
static FILE *out;
static long active, done_ok, done_err;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void load_requests(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(size + 1);
    if (fread(buf, 1, size, f) != (size_t)size) { perror("read"); exit(2); }
    buf[size] = 0;
    fclose(f);
    size_t cap = 1024;
    reqs = malloc(cap * sizeof *reqs);
    req_lens = malloc(cap * sizeof *req_lens);
    char *p = buf;
    while (*p) {
        char *end = strstr(p, "\n\n");
        if (!end) break;
        end += 2;
        if (nreqs == cap) {
            cap *= 2;
            reqs = realloc(reqs, cap * sizeof *reqs);
            req_lens = realloc(req_lens, cap * sizeof *req_lens);
        }
        reqs[nreqs] = p;
        req_lens[nreqs++] = end - p;
        p = end;
    }
    if (!nreqs) { fprintf(stderr, "%s: no request\n", path); exit(2); }
}

static void finish(session_t *s, const char *error) {
    epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    active--;
    if (!error && !s->got_first) error = "closed without a command";
    if (error) {
        done_err++;
        fprintf(out, "error %s\n", error);
    } else {
        done_ok++;
        fprintf(out, "%.1f %s\n", s->latency * 1e6, s->verdict[0] ? s->verdict : "?");
    }
    free(s);
}

static void send_request(session_t *s) {
    const char *r = reqs[next_req % nreqs];
    size_t len = req_lens[next_req % nreqs];
    next_req++;
    s->t0 = now();
    ssize_t n = write(s->fd, r, len);  /* ~600 bytes: always fits an empty socket buffer */
    if (n != (ssize_t)len) { finish(s, n < 0 ? strerror(errno) : "short write"); return; }
    s->connected = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
}

static void start_session(void) {
    session_t *s = calloc(1, sizeof *s);
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->fd < 0) { perror("socket"); exit(2); }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    active++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    if (connect(s->fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
        send_request(s);
    } else if (errno != EINPROGRESS) {
        finish(s, strerror(errno));
    }
}

/* What Asterisk answers: SET VARIABLE sets (only CALLGUARD_VERDICT is kept, plain or as ARRAY()'s
 * first name and value), GET VARIABLE reads it back, anything else gets "200 result=1". */
static int on_line(session_t *s) {
    char reply[96];
    const char *l = s->line;
    size_t len = s->line_len;
    const char *set = "SET VARIABLE CALLGUARD_VERDICT ", *arr = "SET VARIABLE ARRAY(CALLGUARD_VERDICT,";
    const char *get = "GET VARIABLE CALLGUARD_VERDICT";
    if (len > strlen(set) && memcmp(l, set, strlen(set)) == 0) {
        size_t v = len - strlen(set) < sizeof s->verdict - 1 ? len - strlen(set) : sizeof s->verdict - 1;
        memcpy(s->verdict, l + strlen(set), v);
        s->verdict[v] = 0;
    } else if (len > strlen(arr) && memcmp(l, arr, strlen(arr)) == 0) {
        const char *q = memchr(l, '"', len);
        size_t v = 0;
        if (q)
            for (q++; q < l + len && *q != ',' && *q != '"' && v < sizeof s->verdict - 1; q++) s->verdict[v++] = *q;
        s->verdict[v] = 0;
    }
    int rlen;
    if (len == strlen(get) && memcmp(l, get, len) == 0)
        rlen = s->verdict[0] ? snprintf(reply, sizeof reply, "200 result=1 (%s)\n", s->verdict)
                             : snprintf(reply, sizeof reply, "200 result=0\n");
    else
        rlen = snprintf(reply, sizeof reply, "200 result=1\n");
    return write(s->fd, reply, rlen) == rlen;
}

static void on_event(session_t *s, uint32_t events) {
    if (!s->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { finish(s, strerror(err)); return; }
        send_request(s);
        return;
    }
    char buf[4096];
    for (;;) {
        ssize_t n = read(s->fd, buf, sizeof buf);
        if (n == 0) { finish(s, NULL); return; }
        if (n < 0) {
            if (errno == EAGAIN) return;
            finish(s, s->got_first && errno == ECONNRESET ? NULL : strerror(errno));
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n') {
                if (s->line_len < LINE_MAX_) s->line[s->line_len++] = buf[i];
                continue;
            }
            if (!s->got_first) {
                s->got_first = 1;
                s->latency = now() - s->t0;
            }
            if (!on_line(s)) {
                finish(s, "reply write failed");
                return;
            }
            s->line_len = 0;
        }
    }
    (void)events;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: agiload HOST PORT REQUESTS closed|open CONCURRENCY RATE SECONDS OUT\n");
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons(atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
    load_requests(argv[3]);
    int open_loop = strcmp(argv[4], "open") == 0;
    long concurrency = atol(argv[5]);
    double rate = atof(argv[6]), seconds = atof(argv[7]);
    out = fopen(argv[8], "w");
    if (!out) { perror(argv[8]); return 2; }
    ep = epoll_create1(0);
    struct epoll_event events[256];
    double t0 = now(), deadline = t0 + seconds;
    long total = open_loop ? (long)(rate * seconds) : 0, started = 0;
    if (!open_loop)
        for (; started < concurrency; started++) start_session();
    for (;;) {
        double t = now();
        int timeout_ms = 50;
        if (open_loop) {
            /* every start that is due, as long as a slot is free; the rest wait for a slot */
            while (started < total && active < concurrency && t0 + started / rate <= t) {
                start_session();
                started++;
            }
            if (started >= total && active == 0) break;
            if (started < total && active < concurrency) {
                double wait = t0 + started / rate - t;
                timeout_ms = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
                if (timeout_ms > 1 && wait < 0.002) timeout_ms = 1;
            }
        } else {
            while (t < deadline && active < concurrency) { start_session(); started++; }
            if (t >= deadline && active == 0) break;
        }
        int n = epoll_wait(ep, events, 256, timeout_ms);
        for (int i = 0; i < n; i++) on_event(events[i].data.ptr, events[i].events);
    }
    double elapsed = now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(out, "#elapsed_s %.6f\n", elapsed);
    fprintf(out, "#cpu_us %ld\n", (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000L + ru.ru_utime.tv_usec +
                                      ru.ru_stime.tv_usec);
    fclose(out);
    return 0;
}
