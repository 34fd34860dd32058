/*
 * nkv_test.h: helpers shared by the C test programs in tests/c/.
 *
 * Each program includes this header first. It checks with plain asserts that
 * print what went wrong (and this thread's nkv_last_error) and exit 1, and
 * offers a "recorder": a callback + user_data pair that copies every event it
 * is given, so that a test can wait for events and inspect them afterwards.
 *
 * The programs are run by tests/c_api.rs against a live nkv-server whose
 * address is in NKV_ADDR (and its pid in NKV_SERVER_PID). Under valgrind the
 * harness also sets NKV_TEST_VALGRIND=1, so that the heavy loops can scale
 * down (see under_valgrind()).
 */
#ifndef NKV_TEST_H
#define NKV_TEST_H

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "nkv.h"

/* ---------------------------------------------------------------- checks */

__attribute__((format(printf, 3, 4), noreturn)) static inline void
nkv_test_fail(const char *file, int line, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    nkv_last_error(detail, sizeof detail);
    fprintf(stderr, "%s:%d: FAILED: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n    (nkv_last_error on this thread: \"%s\")\n", detail);
    fflush(stderr);
    fflush(stdout);
    exit(1);
}

/* CHECK(condition, printf-style message...) */
#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            nkv_test_fail(__FILE__, __LINE__, __VA_ARGS__);                    \
    } while (0)

/* CHECK_STATUS(call, expected status) */
#define CHECK_STATUS(expr, want)                                               \
    do {                                                                       \
        nkv_status got_ = (expr);                                              \
        nkv_status want_ = (want);                                             \
        if (got_ != want_)                                                     \
            nkv_test_fail(__FILE__, __LINE__, "%s returned %s, expected %s",   \
                          #expr, nkv_status_str(got_), nkv_status_str(want_)); \
    } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, NKV_OK)

#define BYTES(s) ((const uint8_t *)(s))

/* Milliseconds on a monotonic clock. */
static inline int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(int64_t ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Timeouts are generous: the programs also run under valgrind. */
#define WAIT_MS 20000

/* The address of the test server, from NKV_ADDR. */
static inline const char *test_addr(void) {
    const char *addr = getenv("NKV_ADDR");
    CHECK(addr != NULL && addr[0] != '\0', "NKV_ADDR is not set");
    return addr;
}

static inline nkv_client *test_connect(void) {
    nkv_client *c = NULL;
    CHECK_OK(nkv_connect(test_addr(), &c));
    CHECK(c != NULL, "nkv_connect returned NKV_OK but no client");
    return c;
}

static inline void put_str(nkv_client *c, const char *key, const char *value,
                           uint64_t *rev) {
    nkv_status s = nkv_put(c, key, NKV_NUL, BYTES(value), strlen(value), rev);
    CHECK(s == NKV_OK, "nkv_put(%s) returned %s", key, nkv_status_str(s));
}

/* True when the harness runs this program under valgrind (which is 20 to 50
 * times slower): heavy loops scale down, timing bounds widen. */
static inline bool under_valgrind(void) {
    const char *v = getenv("NKV_TEST_VALGRIND");
    return v != NULL && v[0] == '1';
}

/* ------------------------------------------------------------- watchdog */

/* What the program was doing when the watchdog fired. */
static char nkv_test_watchdog_what[200];

static void nkv_test_watchdog_fired(int sig) {
    (void)sig;
    /* async-signal-safe: write(2) and _exit(2) only */
    static const char head[] = "FAILED: watchdog: still not done after the alarm: ";
    ssize_t w = write(2, head, sizeof head - 1);
    w = write(2, nkv_test_watchdog_what, strlen(nkv_test_watchdog_what));
    w = write(2, "\n", 1);
    (void)w;
    _exit(3);
}

/* Arms a watchdog: if the program is still running `seconds` from now, it
 * prints `what` and exits with 3, so that a deadlock fails the test instead
 * of hanging it. watchdog(0, NULL) disarms it. */
static inline void watchdog(unsigned seconds, const char *what) {
    if (seconds == 0) {
        alarm(0);
        return;
    }
    snprintf(nkv_test_watchdog_what, sizeof nkv_test_watchdog_what, "%s", what);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = nkv_test_watchdog_fired;
    sigaction(SIGALRM, &sa, NULL);
    alarm(seconds);
}

/* The watchdog for a whole program: it fails before the harness's own
 * deadline (150 s) would kill it without a word. */
static inline void watchdog_program(const char *name) {
    watchdog(under_valgrind() ? 140 : 100, name);
}

/* -------------------------------------------------------- stopped server */

/* The server's pid (NKV_SERVER_PID), or 0 when the harness did not say. */
static inline pid_t server_pid(void) {
    const char *s = getenv("NKV_SERVER_PID");
    return s != NULL && s[0] != '\0' ? (pid_t)atol(s) : 0;
}

/* kill() returns before the target stops: wait until /proc says it has. */
static inline void wait_stopped(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    int64_t deadline = now_ms() + 5000;
    for (;;) {
        FILE *f = fopen(path, "r");
        CHECK(f != NULL, "cannot open %s", path);
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *paren = strrchr(buf, ')');
        if (paren != NULL && paren[1] == ' ' && paren[2] == 'T') {
            return;
        }
        CHECK(now_ms() < deadline, "the server did not stop after SIGSTOP");
        sleep_ms(5);
    }
}

/* Stops the server (SIGSTOP) and waits until it is stopped. */
static inline void server_stop(pid_t pid) {
    CHECK(kill(pid, SIGSTOP) == 0, "SIGSTOP to the server (pid %ld)", (long)pid);
    wait_stopped(pid);
}

static inline void server_cont(pid_t pid) {
    CHECK(kill(pid, SIGCONT) == 0, "SIGCONT to the server (pid %ld)", (long)pid);
}

/* ---------------------------------------------------------------- memory */

/* A "Vm...:" line of /proc/self/status in KiB (e.g. "VmRSS:", "VmHWM:"). */
static inline long proc_status_kib(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f != NULL, "cannot open /proc/self/status");
    char line[256];
    long kib = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, n) == 0) {
            kib = atol(line + n);
            break;
        }
    }
    fclose(f);
    CHECK(kib >= 0, "no %s line in /proc/self/status", field);
    return kib;
}

/* ------------------------------------------------------------- recorder */

/* One copied event. */
typedef struct rec_event {
    nkv_event_kind kind;
    uint64_t subscription; /* the event's subscription id */
    char *key;     /* NULL when the event had none */
    uint8_t *data; /* NUL-terminated copy; NULL when the event had none */
    size_t len;
    uint64_t revision;
    uint64_t coalesced;
} rec_event;

/* Records every event of one subscription. Thread-safe.
 *
 * Pass &r->id as nkv_subscribe's out_subscription: nkv_subscribe stores the
 * id there before returning and no callback runs before that, so every
 * event must carry exactly r->id (counted in wrong_id otherwise). */
typedef struct recorder {
    uint64_t id;         /* the subscription id (nkv_subscribe writes it) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rec_event *events;
    size_t count;
    size_t cap;
    int freed;           /* times free_user_data was called */
    int in_callback;     /* callbacks running right now */
    int overlap;         /* a callback started while another one ran */
    int after_free;      /* a callback ran after free_user_data */
    int free_during_cb;  /* free_user_data ran while a callback was running */
    int thread_changed;  /* callbacks (CLOSED aside) ran on more than one thread */
    int wrong_id;        /* events whose subscription was not r->id */
    int bad_key_len;     /* events whose key_len was not strlen(key) */
    bool have_free_thread;
    pthread_t free_thread; /* the thread free_user_data ran on */
    bool have_thread;
    pthread_t thread;    /* the thread the first callback ran on */
    bool have_closed_thread;
    pthread_t closed_thread; /* the thread the CLOSED event ran on (nkv_close's) */
    int64_t delay_ms;    /* each callback sleeps this long (slow consumer) */
    /* optional hook, run after the event is recorded (outside the lock) */
    void (*hook)(struct recorder *r, const nkv_event *ev);
    void *hook_arg;
} recorder;

static inline void recorder_init(recorder *r) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static inline void recorder_destroy(recorder *r) {
    for (size_t i = 0; i < r->count; i++) {
        free(r->events[i].key);
        free(r->events[i].data);
    }
    free(r->events);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

/* The nkv_callback: user_data is a recorder. */
static inline void recorder_cb(void *user_data, const nkv_event *ev) {
    recorder *r = (recorder *)user_data;
    rec_event copy;
    memset(&copy, 0, sizeof copy);
    copy.kind = ev->kind;
    copy.subscription = ev->subscription;
    copy.len = ev->len;
    copy.revision = ev->revision;
    copy.coalesced = ev->coalesced;
    if (ev->key != NULL) {
        copy.key = strdup(ev->key);
    }
    if (ev->data != NULL) {
        copy.data = (uint8_t *)malloc(ev->len + 1);
        if (ev->len > 0) {
            memcpy(copy.data, ev->data, ev->len);
        }
        copy.data[ev->len] = 0;
    }

    pthread_mutex_lock(&r->mu);
    if (ev->subscription != r->id) {
        r->wrong_id++;
    }
    if (ev->key != NULL ? ev->key_len != strlen(ev->key) : ev->key_len != 0) {
        r->bad_key_len++;
    }
    if (r->in_callback > 0) {
        r->overlap++;
    }
    if (r->freed > 0) {
        r->after_free++;
    }
    r->in_callback++;
    if (ev->kind == NKV_EVENT_CLOSED) {
        /* nkv_close runs the final CLOSED events on the closing thread */
        r->have_closed_thread = true;
        r->closed_thread = pthread_self();
    } else if (!r->have_thread) {
        r->have_thread = true;
        r->thread = pthread_self();
    } else if (!pthread_equal(r->thread, pthread_self())) {
        r->thread_changed++;
    }
    if (r->count == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->events = (rec_event *)realloc(r->events, r->cap * sizeof *r->events);
    }
    r->events[r->count++] = copy;
    pthread_cond_broadcast(&r->cv);
    int64_t delay = r->delay_ms;
    pthread_mutex_unlock(&r->mu);

    if (delay > 0) {
        sleep_ms(delay);
    }
    if (r->hook != NULL) {
        r->hook(r, ev);
    }

    pthread_mutex_lock(&r->mu);
    r->in_callback--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* The free_user_data function: user_data is a recorder (not freed here). */
static inline void recorder_free(void *user_data) {
    recorder *r = (recorder *)user_data;
    pthread_mutex_lock(&r->mu);
    if (r->in_callback > 0) {
        r->free_during_cb++;
    }
    r->freed++;
    r->have_free_thread = true;
    r->free_thread = pthread_self();
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Subscribes `r` to `prefix` (NUL-terminated), storing the id in r->id. */
static inline nkv_status recorder_subscribe(nkv_client *c, const char *prefix, recorder *r) {
    return nkv_subscribe(c, prefix, NKV_NUL, recorder_cb, r, recorder_free, &r->id);
}

/* True when free_user_data ran (last) on the calling thread. */
static inline bool recorder_freed_here(recorder *r) {
    pthread_mutex_lock(&r->mu);
    bool here = r->have_free_thread && pthread_equal(r->free_thread, pthread_self());
    pthread_mutex_unlock(&r->mu);
    return here;
}

static inline size_t recorder_count(recorder *r) {
    pthread_mutex_lock(&r->mu);
    size_t n = r->count;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static inline int recorder_freed(recorder *r) {
    pthread_mutex_lock(&r->mu);
    int n = r->freed;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static inline void deadline_ts(struct timespec *ts, int64_t ms) {
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Index of the first event at or after `from` that has `kind` (and, when
 * `key` is not NULL, that key), waiting up to timeout_ms; -1 on timeout. */
static inline long recorder_wait_for(recorder *r, size_t from, nkv_event_kind kind,
                                     const char *key, int64_t timeout_ms) {
    struct timespec ts;
    deadline_ts(&ts, timeout_ms);
    long found = -1;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        for (size_t i = from; i < r->count; i++) {
            rec_event *e = &r->events[i];
            if (e->kind == kind &&
                (key == NULL || (e->key != NULL && strcmp(e->key, key) == 0))) {
                found = (long)i;
                break;
            }
        }
        if (found >= 0) {
            break;
        }
        from = r->count;
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return found;
}

/* Waits until free_user_data was called at least `n` times. */
static inline bool recorder_wait_freed(recorder *r, int n, int64_t timeout_ms) {
    struct timespec ts;
    deadline_ts(&ts, timeout_ms);
    bool ok = true;
    pthread_mutex_lock(&r->mu);
    while (r->freed < n) {
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT) {
            ok = r->freed >= n;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* Copy of event i (valid until the recorder is destroyed). */
static inline rec_event recorder_get(recorder *r, size_t i) {
    pthread_mutex_lock(&r->mu);
    CHECK(i < r->count, "event %zu requested, only %zu recorded", i, r->count);
    rec_event e = r->events[i];
    pthread_mutex_unlock(&r->mu);
    return e;
}

static inline const char *kind_name(nkv_event_kind k) {
    switch (k) {
    case NKV_EVENT_UPDATE: return "UPDATE";
    case NKV_EVENT_DELETE: return "DELETE";
    case NKV_EVENT_SYNCED: return "SYNCED";
    case NKV_EVENT_RESET: return "RESET";
    case NKV_EVENT_DISCONNECTED: return "DISCONNECTED";
    case NKV_EVENT_CLOSED: return "CLOSED";
    case NKV_EVENT_GROUP: return "GROUP";
    }
    return "?";
}

/* Prints every recorded event to stderr (for failure diagnosis). */
static inline void recorder_dump(recorder *r, const char *title) {
    pthread_mutex_lock(&r->mu);
    fprintf(stderr, "--- %s: %zu events\n", title, r->count);
    for (size_t i = 0; i < r->count; i++) {
        rec_event *e = &r->events[i];
        fprintf(stderr, "  [%zu] sub=%llu %s key=%s value=%s rev=%llu coalesced=%llu\n", i,
                (unsigned long long)e->subscription, kind_name(e->kind),
                e->key ? e->key : "(null)", e->data ? (const char *)e->data : "(null)",
                (unsigned long long)e->revision, (unsigned long long)e->coalesced);
    }
    pthread_mutex_unlock(&r->mu);
}

/* Checks the invariants every recorder must keep (one dispatcher thread,
 * no overlapping callbacks, nothing after free_user_data, every event
 * carrying the id nkv_subscribe stored in r->id, key_len right). */
static inline void recorder_check_invariants(recorder *r, const char *name) {
    pthread_mutex_lock(&r->mu);
    int overlap = r->overlap, after_free = r->after_free, during = r->free_during_cb;
    int changed = r->thread_changed, wrong_id = r->wrong_id, bad_len = r->bad_key_len;
    uint64_t id = r->id;
    pthread_mutex_unlock(&r->mu);
    CHECK(wrong_id == 0,
          "%s: %d events did not carry the subscription id %llu that nkv_subscribe stored "
          "(a callback before nkv_subscribe returned?)",
          name, wrong_id, (unsigned long long)id);
    CHECK(bad_len == 0, "%s: %d events had a key_len other than strlen(key)", name, bad_len);
    CHECK(overlap == 0, "%s: %d callbacks started while another one was running", name,
          overlap);
    CHECK(after_free == 0, "%s: %d callbacks ran after free_user_data", name, after_free);
    CHECK(during == 0, "%s: free_user_data ran while a callback was running", name);
    CHECK(changed == 0, "%s: callbacks ran on %d other threads than the first", name,
          changed);
}

#endif /* NKV_TEST_H */
