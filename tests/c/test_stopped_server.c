/*
 * test_stopped_server.c: a server that stops answering (SIGSTOP), then
 * comes back (SIGCONT).
 *
 * - nkv_subscribe that times out (the client's timeout, or this thread's
 *   deadline) has called free_user_data, once, on the calling thread, before
 *   it returns, and writes no id; a free_user_data that itself calls
 *   nkv_unsubscribe hangs nothing; when the server answers the SUB late, no
 *   callback runs, free_user_data does not run again, and the client ends
 *   that subscription on the server.
 * - keepalive: with nkv_options_set_keepalive(200) a hung server is noticed
 *   (DISCONNECTED within about a second, nkv_state not CONNECTED, requests
 *   fail fast); after SIGCONT the client reconnects, resumes (SYNCED) and
 *   nkv_state is CONNECTED again.
 *
 * Needs NKV_ADDR and NKV_SERVER_PID (a live, empty server it may stop).
 */
#include "nkv_test.h"

#include <stdatomic.h>

#define SENTINEL UINT64_C(0xdeadbeefcafef00d)

/* The user data of a subscription whose nkv_subscribe times out. */
struct failing {
    nkv_client *c;
    uint64_t id;           /* out_subscription: must stay SENTINEL */
    atomic_int calls;      /* callbacks: must stay 0, even after a late SUB_OK */
    atomic_int frees;
    pthread_t free_thread;
    uint64_t unsub_target; /* a live subscription free_user_data ends */
    nkv_status unsub_status;
    nkv_status bogus_status;
};

static void failing_cb(void *user_data, const nkv_event *ev) {
    (void)ev;
    atomic_fetch_add(&((struct failing *)user_data)->calls, 1);
}

/* free_user_data that calls back into the library, as cleanup code does. */
static void failing_free(void *user_data) {
    struct failing *f = (struct failing *)user_data;
    f->free_thread = pthread_self();
    f->unsub_status = nkv_unsubscribe(f->c, f->unsub_target);
    f->bogus_status = nkv_unsubscribe(f->c, 987654321);
    atomic_fetch_add(&f->frees, 1);
}

static uint64_t stat_value(nkv_client *c, const char *name) {
    nkv_stats_list *st = NULL;
    CHECK_OK(nkv_stats(c, &st));
    uint64_t v = 0;
    CHECK_OK(nkv_stats_find(st, name, &v));
    nkv_stats_free(st);
    return v;
}

static void subscribe_times_out(nkv_client *c, pid_t pid, bool via_deadline) {
    const char *how = via_deadline ? "nkv_deadline_set(300)" : "nkv_set_timeout(300)";
    put_str(c, "to.a", "exists", NULL); /* the late SUB_OK brings a snapshot event */

    recorder victim; /* ended by the failing subscription's free_user_data */
    recorder_init(&victim);
    CHECK_OK(recorder_subscribe(c, "to", &victim));
    CHECK(recorder_wait_for(&victim, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 1, "victim: SYNCED");
    CHECK(stat_value(c, "subscriptions") == 1, "the server has other subscriptions");

    struct failing f;
    memset(&f, 0, sizeof f);
    f.c = c;
    f.id = SENTINEL;
    f.unsub_target = victim.id;
    f.unsub_status = f.bogus_status = NKV_ERR_PANIC;

    server_stop(pid);
    watchdog(under_valgrind() ? 60 : 20, "nkv_subscribe to a stopped server (or its cleanup)");
    if (via_deadline) {
        nkv_deadline_set(300);
    } else {
        CHECK_OK(nkv_set_timeout(c, 300));
    }
    int64_t t0 = now_ms();
    nkv_status s = nkv_subscribe(c, "to", NKV_NUL, failing_cb, &f, failing_free, &f.id);
    int64_t took = now_ms() - t0;
    /* what must hold when nkv_subscribe returned (the server is still stopped) */
    int frees_at_return = atomic_load(&f.frees);
    nkv_deadline_clear();
    CHECK_OK(nkv_set_timeout(c, 10000));

    CHECK(s == NKV_ERR_TIMEOUT, "%s: nkv_subscribe to a stopped server returned %s", how,
          nkv_status_str(s));
    CHECK(took >= 250 && took < 5000, "%s: the subscribe took %lld ms", how, (long long)took);
    CHECK(frees_at_return == 1,
          "%s: a timed-out nkv_subscribe returned before free_user_data ran (%d calls)", how,
          frees_at_return);
    CHECK(pthread_equal(f.free_thread, pthread_self()),
          "%s: free_user_data of a failed subscribe ran on another thread", how);
    CHECK(f.id == SENTINEL, "%s: a failed nkv_subscribe wrote *out_subscription", how);
    CHECK(f.unsub_status == NKV_OK,
          "%s: nkv_unsubscribe inside free_user_data returned %s", how,
          nkv_status_str(f.unsub_status));
    CHECK(f.bogus_status == NKV_ERR_NOT_FOUND,
          "%s: nkv_unsubscribe(unknown) inside free_user_data returned %s", how,
          nkv_status_str(f.bogus_status));
    CHECK(recorder_freed(&victim) == 1 && recorder_freed_here(&victim),
          "%s: the subscription ended inside free_user_data was not freed there", how);

    /* the server answers the SUB now: SUB_OK, a snapshot, SYNCED */
    server_cont(pid);
    int64_t until = now_ms() + WAIT_MS;
    while (nkv_ping(c) != NKV_OK) {
        CHECK(now_ms() < until, "%s: the client never recovered", how);
        sleep_ms(20);
    }
    /* answers come in order: the late SUB_OK came before this PONG */
    CHECK_OK(nkv_ping(c));
    sleep_ms(200);
    CHECK(atomic_load(&f.calls) == 0, "%s: the late SUB_OK led to %d callbacks", how,
          atomic_load(&f.calls));
    CHECK(atomic_load(&f.frees) == 1, "%s: free_user_data ran %d times", how,
          atomic_load(&f.frees));
    /* the client ended the late subscription (and the victim) on the server */
    while (stat_value(c, "subscriptions") != 0) {
        CHECK(now_ms() < until, "%s: the server still has %llu subscriptions", how,
              (unsigned long long)stat_value(c, "subscriptions"));
        sleep_ms(20);
    }
    watchdog_program("test_stopped_server");
    /* and the client still subscribes normally */
    recorder after;
    recorder_init(&after);
    CHECK_OK(recorder_subscribe(c, "to", &after));
    CHECK(recorder_wait_for(&after, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 1,
          "%s: a subscribe after the timeout", how);
    CHECK_OK(nkv_unsubscribe(c, after.id));
    recorder_check_invariants(&after, "after");
    recorder_check_invariants(&victim, "victim");
    recorder_destroy(&after);
    recorder_destroy(&victim);
    CHECK(atomic_load(&f.calls) == 0 && atomic_load(&f.frees) == 1,
          "%s: the timed-out subscription came back to life", how);
}

/* A hung server is noticed by the keepalive, and left when it comes back.
 * The interval is 200 ms; under valgrind, which slows the client's threads
 * 20 to 50 times, 1000 ms, so that a late wake-up is not taken for silence. */
static void keepalive_notices_a_hung_server(pid_t pid) {
    const uint32_t interval = under_valgrind() ? 1000 : 200;
    nkv_options *o = nkv_options_new();
    CHECK(o != NULL, "nkv_options_new");
    CHECK_OK(nkv_options_set_keepalive(o, interval));
    CHECK_OK(nkv_options_set_connect_timeout(o, 1000));
    CHECK_OK(nkv_options_set_reconnect(o, 1, 50, 500));
    nkv_client *k = NULL;
    CHECK_OK(nkv_connect_opts(test_addr(), o, &k));
    nkv_options_free(o);

    put_str(k, "ka.x", "1", NULL);
    recorder r;
    recorder_init(&r);
    CHECK_OK(recorder_subscribe(k, "ka", &r));
    CHECK(recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 1, "SYNCED");
    /* a quiet but healthy server is not given up: PINGs are answered */
    sleep_ms(5 * interval);
    CHECK(nkv_state(k) == NKV_STATE_CONNECTED, "state %s after a quiet second",
          nkv_state_str(nkv_state(k)));
    CHECK(recorder_wait_for(&r, 2, NKV_EVENT_DISCONNECTED, NULL, 0) < 0,
          "DISCONNECTED while the server was answering");

    server_stop(pid);
    int64_t t0 = now_ms();
    /* silent for one interval: a PING; no answer for another: give up (the
     * server may have stopped just after answering a PING, or just before) */
    int64_t limit = 20 * interval;
    long disc = recorder_wait_for(&r, 2, NKV_EVENT_DISCONNECTED, NULL, limit);
    int64_t took = now_ms() - t0;
    nkv_conn_state state = nkv_state(k);
    nkv_status ping = nkv_ping(k);
    int64_t ping_took = now_ms() - t0 - took;
    sleep_ms(300);
    nkv_conn_state state2 = nkv_state(k);
    server_cont(pid);
    if (disc < 0) {
        recorder_dump(&r, "keepalive");
    }
    CHECK(disc == 2, "no DISCONNECTED within %lld ms of the server hanging (keepalive %u ms)",
          (long long)limit, (unsigned)interval);
    printf("keepalive: DISCONNECTED %lld ms after the server stopped\n", (long long)took);
    CHECK(took < 4 * (int64_t)interval + 1000, "DISCONNECTED only after %lld ms",
          (long long)took);
    CHECK(state != NKV_STATE_CONNECTED && state != NKV_STATE_CLOSED,
          "nkv_state is %s after DISCONNECTED", nkv_state_str(state));
    CHECK(state2 != NKV_STATE_CONNECTED && state2 != NKV_STATE_CLOSED,
          "nkv_state is %s while the server is still stopped", nkv_state_str(state2));
    CHECK(ping == NKV_ERR_CONNECTION && ping_took < 2000,
          "a ping while disconnected returned %s after %lld ms, expected a fast "
          "NKV_ERR_CONNECTION",
          nkv_status_str(ping), (long long)ping_took);

    /* the server is back: reconnect, resume, SYNCED */
    long synced = recorder_wait_for(&r, (size_t)disc + 1, NKV_EVENT_SYNCED, NULL, 30000);
    if (synced < 0) {
        recorder_dump(&r, "after SIGCONT");
    }
    CHECK(synced > disc, "no SYNCED after the server came back");
    int64_t until = now_ms() + WAIT_MS;
    while (nkv_state(k) != NKV_STATE_CONNECTED) {
        CHECK(now_ms() < until, "nkv_state is %s after SYNCED", nkv_state_str(nkv_state(k)));
        sleep_ms(10);
    }
    CHECK_OK(nkv_ping(k));
    uint64_t rev = 0;
    put_str(k, "ka.after", "2", &rev);
    long i = recorder_wait_for(&r, (size_t)synced + 1, NKV_EVENT_UPDATE, "ka.after", WAIT_MS);
    CHECK(i > synced && recorder_get(&r, (size_t)i).revision == rev, "no live event afterwards");

    nkv_close(k);
    CHECK(recorder_freed(&r) == 1, "free_user_data ran %d times", recorder_freed(&r));
    recorder_check_invariants(&r, "keepalive");
    recorder_destroy(&r);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    watchdog_program("test_stopped_server");
    pid_t pid = server_pid();
    CHECK(pid > 0, "NKV_SERVER_PID is not set");
    nkv_client *c = test_connect();
    subscribe_times_out(c, pid, false);
    subscribe_times_out(c, pid, true);
    nkv_close(c);
    watchdog(under_valgrind() ? 120 : 60, "the keepalive test");
    keepalive_notices_a_hung_server(pid);
    watchdog(0, NULL);
    printf("test_stopped_server: OK\n");
    return 0;
}
