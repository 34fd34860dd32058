/*
 * test_manual_dispatch.c: event-loop integration (NKV_DISPATCH_MANUAL).
 *
 * - nkv_fd() is a descriptor that poll() reports readable when an event
 *   waits, and not readable once nkv_dispatch() has run everything;
 * - no callback runs unless the program calls nkv_dispatch(), and then on
 *   the calling thread; `max` bounds how many run per call; nkv_dispatch
 *   from inside a callback runs nothing;
 * - nkv_unsubscribe and nkv_close (from the loop's thread, and from inside
 *   a callback run by nkv_dispatch) end subscriptions with CLOSED and
 *   free_user_data on that thread, without another nkv_dispatch.
 *
 * Needs NKV_ADDR (a live, empty server).
 */
#include "nkv_test.h"

#include <poll.h>

/* poll() on the client's descriptor; true when readable within timeout_ms. */
static bool fd_readable(int fd, int timeout_ms) {
    struct pollfd p = {fd, POLLIN, 0};
    int n;
    do {
        n = poll(&p, 1, timeout_ms);
    } while (n < 0 && errno == EINTR);
    CHECK(n >= 0, "poll failed: %s", strerror(errno));
    CHECK((p.revents & (POLLERR | POLLNVAL)) == 0, "poll: revents 0x%x", (unsigned)p.revents);
    return n == 1 && (p.revents & POLLIN) != 0;
}

/* The program's event loop: poll, then dispatch, until `key` has arrived
 * in `r` (or, with key NULL, a SYNCED); returns the event's index. */
static long loop_until(nkv_client *m, recorder *r, size_t from, nkv_event_kind kind,
                       const char *key) {
    int fd = nkv_fd(m);
    int64_t until = now_ms() + WAIT_MS;
    for (;;) {
        long i = recorder_wait_for(r, from, kind, key, 0);
        if (i >= 0) {
            return i;
        }
        CHECK(now_ms() < until, "the event loop never saw %s %s", kind_name(kind),
              key ? key : "");
        if (fd_readable(fd, 100)) {
            size_t ran = 0;
            CHECK_OK(nkv_dispatch(m, 0, &ran));
        }
    }
}

/* Hook: nkv_dispatch from inside a callback runs nothing. */
static size_t nested_ran = 99;
static nkv_status nested_status = NKV_ERR_PANIC;
static void nested_dispatch_hook(recorder *r, const nkv_event *ev) {
    nkv_client *m = (nkv_client *)r->hook_arg;
    if (ev->kind == NKV_EVENT_UPDATE && strcmp(ev->key, "md.nested") == 0) {
        nested_status = nkv_dispatch(m, 0, &nested_ran);
    }
}

static nkv_client *connect_manual(void) {
    nkv_options *o = nkv_options_new();
    CHECK(o != NULL, "nkv_options_new");
    CHECK_OK(nkv_options_set_dispatch(o, NKV_DISPATCH_MANUAL));
    nkv_client *m = NULL;
    CHECK_OK(nkv_connect_opts(test_addr(), o, &m));
    nkv_options_free(o);
    return m;
}

static void test_poll_and_dispatch(nkv_client *writer) {
    nkv_client *m = connect_manual();
    int fd = nkv_fd(m);
    CHECK(fd >= 0, "nkv_fd in manual mode is %d", fd);
    CHECK(nkv_fd(m) == fd, "nkv_fd changed between calls");

    put_str(writer, "md.a", "snapshot", NULL);
    recorder r;
    recorder_init(&r);
    r.hook = nested_dispatch_hook;
    r.hook_arg = m;
    CHECK_OK(recorder_subscribe(m, "md", &r));

    /* the snapshot waits for the program: nothing runs by itself */
    CHECK(fd_readable(fd, WAIT_MS), "nkv_fd never became readable for the snapshot");
    sleep_ms(200);
    CHECK(recorder_count(&r) == 0, "%zu callbacks ran without nkv_dispatch", recorder_count(&r));

    /* max = 1 runs one callback, on this thread */
    size_t ran = 99;
    CHECK_OK(nkv_dispatch(m, 1, &ran));
    CHECK(ran == 1 && recorder_count(&r) == 1, "nkv_dispatch(max 1) ran %zu (%zu recorded)",
          ran, recorder_count(&r));
    pthread_mutex_lock(&r.mu);
    bool here = r.have_thread && pthread_equal(r.thread, pthread_self());
    pthread_mutex_unlock(&r.mu);
    CHECK(here, "the callback did not run on the thread that called nkv_dispatch");
    long synced = loop_until(m, &r, 0, NKV_EVENT_SYNCED, NULL);
    CHECK(synced == 1, "SYNCED is event %ld, expected 1 (after UPDATE md.a)", synced);

    /* nothing waits: once dispatch has run everything, the fd is quiet */
    sleep_ms(100);
    do {
        CHECK_OK(nkv_dispatch(m, 0, &ran));
    } while (ran > 0);
    CHECK(!fd_readable(fd, 0), "nkv_fd is readable with nothing to dispatch");

    /* an update from another connection wakes poll(); the callback still
     * waits for nkv_dispatch */
    size_t before = recorder_count(&r);
    int64_t t0 = now_ms();
    put_str(writer, "md.b", "live", NULL);
    CHECK(fd_readable(fd, WAIT_MS), "poll on nkv_fd did not wake for an update");
    int64_t woke = now_ms() - t0;
    sleep_ms(100);
    CHECK(recorder_count(&r) == before, "a callback ran before nkv_dispatch was called");
    CHECK_OK(nkv_dispatch(m, 0, &ran));
    CHECK(ran == 1, "nkv_dispatch ran %zu callbacks for one update", ran);
    rec_event e = recorder_get(&r, before);
    CHECK(e.kind == NKV_EVENT_UPDATE && strcmp(e.key, "md.b") == 0, "expected UPDATE md.b");
    printf("manual dispatch: poll woke %lld ms after the put\n", (long long)woke);

    /* max bounds each call */
    char key[32];
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof key, "md.m%d", i);
        put_str(writer, key, "v", NULL);
    }
    size_t total = 0;
    int64_t until = now_ms() + WAIT_MS;
    while (recorder_wait_for(&r, before, NKV_EVENT_UPDATE, "md.m5", 0) < 0) {
        CHECK(now_ms() < until, "md.m5 never arrived");
        if (fd_readable(fd, 100)) {
            CHECK_OK(nkv_dispatch(m, 2, &ran));
            CHECK(ran <= 2, "nkv_dispatch(max 2) ran %zu callbacks", ran);
            total += ran;
        }
    }
    CHECK(total == 6, "6 updates ran as %zu callbacks", total);

    /* nkv_dispatch from inside a callback runs nothing (and does not hang) */
    put_str(writer, "md.nested", "v", NULL);
    put_str(writer, "md.after-nested", "v", NULL);
    watchdog(WAIT_MS / 1000, "nkv_dispatch from inside a callback");
    loop_until(m, &r, before, NKV_EVENT_UPDATE, "md.nested");
    watchdog_program("test_manual_dispatch");
    CHECK(nested_status == NKV_OK && nested_ran == 0,
          "nkv_dispatch inside a callback returned %s and ran %zu callbacks",
          nkv_status_str(nested_status), nested_ran);
    loop_until(m, &r, before, NKV_EVENT_UPDATE, "md.after-nested");

    /* unsubscribe frees at once, on this thread, with no dispatch */
    recorder u;
    recorder_init(&u);
    CHECK_OK(recorder_subscribe(m, "md", &u));
    loop_until(m, &u, 0, NKV_EVENT_SYNCED, NULL);
    put_str(writer, "md.c", "queued for u", NULL);
    CHECK(fd_readable(fd, WAIT_MS), "no wake for md.c");
    CHECK_OK(nkv_unsubscribe(m, u.id));
    CHECK(recorder_freed(&u) == 1 && recorder_freed_here(&u),
          "nkv_unsubscribe in manual mode did not free on this thread");
    size_t u_count = recorder_count(&u);
    loop_until(m, &r, before, NKV_EVENT_UPDATE, "md.c");
    CHECK(recorder_count(&u) == u_count, "an unsubscribed callback ran");
    recorder_check_invariants(&u, "unsubscribed");
    recorder_destroy(&u);

    /* close from the loop's thread: CLOSED and free_user_data run inside
     * nkv_close, with no nkv_dispatch */
    put_str(writer, "md.d", "waiting at close", NULL);
    CHECK(fd_readable(fd, WAIT_MS), "no wake for md.d");
    nkv_close(m);
    CHECK(recorder_freed(&r) == 1 && recorder_freed_here(&r),
          "nkv_close in manual mode did not free on this thread before returning");
    size_t n = recorder_count(&r);
    CHECK(recorder_get(&r, n - 1).kind == NKV_EVENT_CLOSED, "the last event is %s, not CLOSED",
          kind_name(recorder_get(&r, n - 1).kind));
    recorder_check_invariants(&r, "manual");
    recorder_destroy(&r);
}

/* nkv_close from inside a callback that nkv_dispatch runs: the other
 * subscriptions' CLOSED events and every free_user_data run before that
 * nkv_dispatch returns, on the same thread. */
static bool closed_inside;
static void close_hook(recorder *r, const nkv_event *ev) {
    if (ev->kind == NKV_EVENT_UPDATE && strcmp(ev->key, "mc.close") == 0) {
        nkv_close((nkv_client *)r->hook_arg);
        closed_inside = true;
    }
}

static void test_close_inside_dispatch(nkv_client *writer) {
    nkv_client *m = connect_manual();
    recorder a, b;
    recorder_init(&a);
    recorder_init(&b);
    a.hook = close_hook;
    a.hook_arg = m;
    CHECK_OK(recorder_subscribe(m, "mc", &a));
    CHECK_OK(recorder_subscribe(m, "mc", &b));
    loop_until(m, &a, 0, NKV_EVENT_SYNCED, NULL);
    loop_until(m, &b, 0, NKV_EVENT_SYNCED, NULL);
    put_str(writer, "mc.close", "v", NULL);
    put_str(writer, "mc.more", "v", NULL);
    int fd = nkv_fd(m);
    int64_t until = now_ms() + WAIT_MS;
    /* the program's loop; it must stop calling once the client is closed */
    while (!closed_inside) {
        CHECK(now_ms() < until, "mc.close never arrived");
        if (fd_readable(fd, 100)) {
            CHECK_OK(nkv_dispatch(m, 1, NULL));
        }
    }
    CHECK(recorder_freed(&a) == 1 && recorder_freed(&b) == 1 && recorder_freed_here(&a) &&
              recorder_freed_here(&b),
          "after nkv_dispatch returned, free_user_data had not run (on this thread) for "
          "every subscription of the client closed inside a callback");
    recorder *both[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        size_t n = recorder_count(both[i]);
        CHECK(recorder_get(both[i], n - 1).kind == NKV_EVENT_CLOSED,
              "subscription %d: last event %s, expected CLOSED", i,
              kind_name(recorder_get(both[i], n - 1).kind));
        recorder_check_invariants(both[i], "close inside dispatch");
        recorder_destroy(both[i]);
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    watchdog_program("test_manual_dispatch");
    nkv_client *writer = test_connect();
    test_poll_and_dispatch(writer);
    test_close_inside_dispatch(writer);
    nkv_close(writer);
    watchdog(0, NULL);
    printf("test_manual_dispatch: OK\n");
    return 0;
}
