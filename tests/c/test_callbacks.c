/*
 * test_callbacks.c: the subscription callback contract.
 *
 * - snapshot (one UPDATE per existing key), then SYNCED, then live events in
 *   revision order, only for keys the prefix covers;
 * - every callback of a client on one dispatcher thread, never two at once;
 * - nkv_unsubscribe returns only when no callback of that subscription runs
 *   or will run, then calls free_user_data exactly once;
 * - nkv_unsubscribe from inside a callback does not deadlock;
 * - nkv_close ends each subscription with a CLOSED event, then frees;
 * - nkv_subscribe_since resumes; coalesced counts add up.
 *
 * Needs NKV_ADDR (a live, empty server).
 */
#include "nkv_test.h"

/* Finds the key in events [from, to); returns the index or -1. */
static long find_key(recorder *r, size_t from, size_t to, nkv_event_kind kind, const char *key) {
    for (size_t i = from; i < to; i++) {
        rec_event e = recorder_get(r, i);
        if (e.kind == kind && e.key != NULL && strcmp(e.key, key) == 0) {
            return (long)i;
        }
    }
    return -1;
}

static void check_update(recorder *r, size_t i, const char *key, const char *value,
                         uint64_t revision) {
    rec_event e = recorder_get(r, i);
    CHECK(e.kind == NKV_EVENT_UPDATE, "event %zu is %s, expected UPDATE %s", i,
          kind_name(e.kind), key);
    CHECK(e.key != NULL && strcmp(e.key, key) == 0, "event %zu has key %s, expected %s", i,
          e.key ? e.key : "(null)", key);
    CHECK(e.data != NULL && e.len == strlen(value) && memcmp(e.data, value, e.len) == 0,
          "UPDATE %s carries \"%s\", expected \"%s\"", key, e.data ? (char *)e.data : "(null)",
          value);
    if (revision != 0) {
        CHECK(e.revision == revision, "UPDATE %s has revision %llu, expected %llu", key,
              (unsigned long long)e.revision, (unsigned long long)revision);
    }
}

static void test_snapshot_synced_live(nkv_client *c) {
    uint64_t ra = 0, rb = 0, rcd = 0;
    put_str(c, "s.a", "1", &ra);
    put_str(c, "s.b", "2", &rb);
    put_str(c, "s.c.d", "3", &rcd);
    put_str(c, "t", "outside", NULL);
    put_str(c, "sx", "outside too", NULL);

    recorder r;
    recorder_init(&r);
    uint64_t sub = 0;
    CHECK_OK(nkv_subscribe(c, "s", recorder_cb, &r, recorder_free, &sub));
    long synced = recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS);
    CHECK(synced >= 0, "no SYNCED within %d ms", WAIT_MS);
    if (synced != 3) {
        recorder_dump(&r, "snapshot");
    }
    CHECK(synced == 3, "SYNCED is event %ld, expected 3 (after one UPDATE per key)", synced);
    long ia = find_key(&r, 0, 3, NKV_EVENT_UPDATE, "s.a");
    long ib = find_key(&r, 0, 3, NKV_EVENT_UPDATE, "s.b");
    long icd = find_key(&r, 0, 3, NKV_EVENT_UPDATE, "s.c.d");
    CHECK(ia >= 0 && ib >= 0 && icd >= 0, "snapshot misses a key");
    check_update(&r, (size_t)ia, "s.a", "1", ra);
    check_update(&r, (size_t)ib, "s.b", "2", rb);
    check_update(&r, (size_t)icd, "s.c.d", "3", rcd);
    for (size_t i = 0; i < 3; i++) {
        CHECK(recorder_get(&r, i).coalesced == 0, "a snapshot event has coalesced != 0");
    }
    rec_event s = recorder_get(&r, 3);
    CHECK(s.key == NULL, "SYNCED carries a key");
    CHECK(s.revision >= rcd, "SYNCED revision %llu below the snapshot's %llu",
          (unsigned long long)s.revision, (unsigned long long)rcd);
    uint64_t synced_rev = s.revision;

    /* live events, in order, only covered keys */
    uint64_t r1 = 0, r2 = 0, r3 = 0, r4 = 0, count = 0, r5 = 0;
    put_str(c, "s.a", "10", &r1);
    put_str(c, "t", "ignored", NULL);
    CHECK_OK(nkv_delete(c, "s.b", &r2));
    put_str(c, "sx", "ignored", NULL);
    put_str(c, "s.new", "new", &r3);
    CHECK_OK(nkv_delete_prefix(c, "s.c", &r4, &count));
    CHECK(count == 1, "delete_prefix(s.c) deleted %llu", (unsigned long long)count);
    put_str(c, "s.zz", "marker", &r5);
    CHECK(recorder_wait_for(&r, 4, NKV_EVENT_UPDATE, "s.zz", WAIT_MS) >= 0,
          "marker event never arrived");
    if (recorder_count(&r) != 9) {
        recorder_dump(&r, "live");
    }
    CHECK(recorder_count(&r) == 9, "%zu events, expected 4 + 5 live", recorder_count(&r));
    check_update(&r, 4, "s.a", "10", r1);
    rec_event d = recorder_get(&r, 5);
    CHECK(d.kind == NKV_EVENT_DELETE && d.key && strcmp(d.key, "s.b") == 0 && d.revision == r2,
          "event 5 should be DELETE s.b at %llu", (unsigned long long)r2);
    CHECK(d.data == NULL && d.len == 0, "a DELETE event carries data");
    check_update(&r, 6, "s.new", "new", r3);
    d = recorder_get(&r, 7);
    CHECK(d.kind == NKV_EVENT_DELETE && d.key && strcmp(d.key, "s.c.d") == 0 && d.revision == r4,
          "event 7 should be DELETE s.c.d (prefix delete)");
    check_update(&r, 8, "s.zz", "marker", r5);
    uint64_t last = synced_rev;
    for (size_t i = 4; i < 9; i++) {
        rec_event e = recorder_get(&r, i);
        CHECK(e.revision > last, "live event %zu revision %llu not above %llu", i,
              (unsigned long long)e.revision, (unsigned long long)last);
        CHECK(e.coalesced == 0, "live event %zu coalesced %llu with a fast reader", i,
              (unsigned long long)e.coalesced);
        last = e.revision;
    }

    /* callbacks ran on one thread that is not ours */
    pthread_mutex_lock(&r.mu);
    bool on_main = pthread_equal(r.thread, pthread_self());
    pthread_mutex_unlock(&r.mu);
    CHECK(!on_main, "a callback ran on the calling thread, not the dispatcher");

    CHECK_OK(nkv_unsubscribe(c, sub));
    CHECK(recorder_freed(&r) == 1, "free_user_data called %d times", recorder_freed(&r));
    recorder_check_invariants(&r, "snapshot/live");
    recorder_destroy(&r);
}

/* Two subscriptions on one client share the one dispatcher thread. */
static void test_one_dispatcher_per_client(nkv_client *c) {
    recorder a, b;
    recorder_init(&a);
    recorder_init(&b);
    uint64_t sa = 0, sb = 0;
    CHECK_OK(nkv_subscribe(c, "m", recorder_cb, &a, recorder_free, &sa));
    CHECK_OK(nkv_subscribe(c, "", recorder_cb, &b, recorder_free, &sb));
    CHECK(sa != sb, "two subscriptions got the same id %llu", (unsigned long long)sa);
    put_str(c, "m.k", "v", NULL);
    CHECK(recorder_wait_for(&a, 0, NKV_EVENT_UPDATE, "m.k", WAIT_MS) >= 0, "sub m: no event");
    CHECK(recorder_wait_for(&b, 0, NKV_EVENT_UPDATE, "m.k", WAIT_MS) >= 0, "sub \"\": no event");
    CHECK(pthread_equal(a.thread, b.thread),
          "two subscriptions of one client ran on different threads");
    CHECK_OK(nkv_unsubscribe(c, sa));
    CHECK_OK(nkv_unsubscribe(c, sb));
    CHECK(recorder_freed(&a) == 1 && recorder_freed(&b) == 1, "free_user_data not once each");
    recorder_check_invariants(&a, "sub m");
    recorder_check_invariants(&b, "sub all");
    recorder_destroy(&a);
    recorder_destroy(&b);
}

/* nkv_unsubscribe while the callback is busy waits for it to return. */
struct slow {
    recorder r;
    int entered;
    int finished;
};

static void slow_hook(recorder *r, const nkv_event *ev) {
    struct slow *s = (struct slow *)r->hook_arg;
    if (ev->kind != NKV_EVENT_UPDATE || strcmp(ev->key, "u.slow") != 0) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    s->entered = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    sleep_ms(400);
    pthread_mutex_lock(&r->mu);
    s->finished = 1;
    pthread_mutex_unlock(&r->mu);
}

static void test_unsubscribe_waits_for_running_callback(nkv_client *c) {
    struct slow s;
    memset(&s, 0, sizeof s);
    recorder_init(&s.r);
    s.r.hook = slow_hook;
    s.r.hook_arg = &s;
    uint64_t sub = 0;
    CHECK_OK(nkv_subscribe(c, "u", recorder_cb, &s.r, recorder_free, &sub));
    CHECK(recorder_wait_for(&s.r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) >= 0, "no SYNCED");
    put_str(c, "u.slow", "v", NULL);

    struct timespec ts;
    deadline_ts(&ts, WAIT_MS);
    pthread_mutex_lock(&s.r.mu);
    while (!s.entered) {
        CHECK(pthread_cond_timedwait(&s.r.cv, &s.r.mu, &ts) != ETIMEDOUT,
              "slow callback never entered");
    }
    pthread_mutex_unlock(&s.r.mu);

    /* more events queue up behind the slow one; none may run after unsubscribe */
    put_str(c, "u.after1", "v", NULL);
    put_str(c, "u.after2", "v", NULL);
    CHECK_OK(nkv_unsubscribe(c, sub));
    pthread_mutex_lock(&s.r.mu);
    int finished = s.finished, running = s.r.in_callback, freed = s.r.freed;
    size_t count_at_return = s.r.count;
    pthread_mutex_unlock(&s.r.mu);
    CHECK(finished == 1, "nkv_unsubscribe returned while the callback was still running");
    CHECK(running == 0, "a callback is running after nkv_unsubscribe returned");
    CHECK(freed == 1, "free_user_data called %d times by nkv_unsubscribe", freed);

    /* nothing more arrives afterwards */
    put_str(c, "u.after3", "v", NULL);
    CHECK_OK(nkv_ping(c));
    sleep_ms(300);
    CHECK(recorder_count(&s.r) == count_at_return, "callbacks ran after nkv_unsubscribe");
    recorder_check_invariants(&s.r, "slow unsubscribe");
    recorder_destroy(&s.r);
}

/* A callback that unsubscribes itself (and another subscription). */
struct selfstop {
    recorder r;
    nkv_client *c;
    pthread_mutex_t mu;
    uint64_t own_id;
    uint64_t other_id;
    nkv_status own_status;
    nkv_status other_status;
    int called;
};

static void selfstop_hook(recorder *r, const nkv_event *ev) {
    struct selfstop *s = (struct selfstop *)r->hook_arg;
    if (ev->kind != NKV_EVENT_UPDATE || strcmp(ev->key, "x.stop") != 0) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    uint64_t own = s->own_id, other = s->other_id;
    s->called++;
    pthread_mutex_unlock(&s->mu);
    nkv_status so = nkv_unsubscribe(s->c, other);
    nkv_status sw = nkv_unsubscribe(s->c, own);
    pthread_mutex_lock(&s->mu);
    s->other_status = so;
    s->own_status = sw;
    pthread_mutex_unlock(&s->mu);
}

static void test_unsubscribe_from_inside_callback(nkv_client *c) {
    struct selfstop s;
    memset(&s, 0, sizeof s);
    recorder_init(&s.r);
    pthread_mutex_init(&s.mu, NULL);
    s.c = c;
    s.own_status = s.other_status = (nkv_status)-1;
    s.r.hook = selfstop_hook;
    s.r.hook_arg = &s;
    recorder other, witness;
    recorder_init(&other);
    recorder_init(&witness);

    uint64_t own = 0, oth = 0, wit = 0;
    CHECK_OK(nkv_subscribe(c, "x", recorder_cb, &s.r, recorder_free, &own));
    CHECK_OK(nkv_subscribe(c, "x", recorder_cb, &other, recorder_free, &oth));
    CHECK_OK(nkv_subscribe(c, "x", recorder_cb, &witness, recorder_free, &wit));
    pthread_mutex_lock(&s.mu);
    s.own_id = own;
    s.other_id = oth;
    pthread_mutex_unlock(&s.mu);

    put_str(c, "x.before", "v", NULL);
    put_str(c, "x.stop", "v", NULL);
    put_str(c, "x.after", "v", NULL);
    /* the witness sees x.after once the stopped subscriptions would have */
    CHECK(recorder_wait_for(&witness, 0, NKV_EVENT_UPDATE, "x.after", WAIT_MS) >= 0,
          "the witness subscription stalled: did nkv_unsubscribe inside a callback deadlock?");
    CHECK(recorder_wait_freed(&s.r, 1, WAIT_MS), "self-unsubscribed: free_user_data not called");
    CHECK(recorder_wait_freed(&other, 1, WAIT_MS),
          "unsubscribed from another callback: free_user_data not called");

    pthread_mutex_lock(&s.mu);
    nkv_status own_status = s.own_status, other_status = s.other_status;
    int called = s.called;
    pthread_mutex_unlock(&s.mu);
    CHECK(called == 1, "the stopping callback ran %d times", called);
    CHECK(own_status == NKV_OK, "nkv_unsubscribe(own) inside the callback returned %s",
          nkv_status_str(own_status));
    CHECK(other_status == NKV_OK, "nkv_unsubscribe(other) inside a callback returned %s",
          nkv_status_str(other_status));
    CHECK(find_key(&s.r, 0, recorder_count(&s.r), NKV_EVENT_UPDATE, "x.after") < 0,
          "the self-unsubscribed callback still saw x.after");

    put_str(c, "x.later", "v", NULL);
    CHECK(recorder_wait_for(&witness, 0, NKV_EVENT_UPDATE, "x.later", WAIT_MS) >= 0,
          "witness: no x.later");
    CHECK(recorder_freed(&s.r) == 1 && recorder_freed(&other) == 1,
          "free_user_data called %d and %d times, expected once each", recorder_freed(&s.r),
          recorder_freed(&other));
    CHECK(find_key(&other, 0, recorder_count(&other), NKV_EVENT_UPDATE, "x.later") < 0,
          "the other unsubscribed callback still saw x.later");

    /* unsubscribing an already-ended subscription from outside: an error, no second free */
    nkv_status again = nkv_unsubscribe(c, own);
    CHECK(again != NKV_OK, "nkv_unsubscribe of an ended subscription returned NKV_OK");
    CHECK(recorder_freed(&s.r) == 1, "free_user_data called twice");

    CHECK_OK(nkv_unsubscribe(c, wit));
    recorder_check_invariants(&s.r, "self-stop");
    recorder_check_invariants(&other, "other");
    recorder_check_invariants(&witness, "witness");
    recorder_destroy(&s.r);
    recorder_destroy(&other);
    recorder_destroy(&witness);
    pthread_mutex_destroy(&s.mu);
}

/* free_user_data really owns the pointer: heap user data freed there. */
static int heap_frees;
static void heap_free(void *p) {
    heap_frees++;
    free(p);
}
static void heap_cb(void *user_data, const nkv_event *ev) {
    int *n = (int *)user_data;
    (void)ev;
    (*n)++;
}

static void test_close_ends_subscriptions(void) {
    nkv_client *c = test_connect();
    recorder a, b;
    recorder_init(&a);
    recorder_init(&b);
    uint64_t sa = 0, sb = 0, sh = 0;
    CHECK_OK(nkv_subscribe(c, "cl", recorder_cb, &a, recorder_free, &sa));
    CHECK_OK(nkv_subscribe(c, "", recorder_cb, &b, recorder_free, &sb));
    int *heap = (int *)calloc(1, sizeof(int));
    heap_frees = 0;
    CHECK_OK(nkv_subscribe(c, "cl", heap_cb, heap, heap_free, &sh));
    put_str(c, "cl.k", "v", NULL);
    CHECK(recorder_wait_for(&a, 0, NKV_EVENT_UPDATE, "cl.k", WAIT_MS) >= 0, "no event");
    CHECK(recorder_wait_for(&b, 0, NKV_EVENT_UPDATE, "cl.k", WAIT_MS) >= 0, "no event");

    nkv_close(c);
    CHECK(recorder_freed(&a) == 1 && recorder_freed(&b) == 1 && heap_frees == 1,
          "after nkv_close free_user_data ran %d, %d, %d times (expected once each)",
          recorder_freed(&a), recorder_freed(&b), heap_frees);
    recorder *both[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        size_t n = recorder_count(both[i]);
        CHECK(n > 0, "no events");
        rec_event last = recorder_get(both[i], n - 1);
        if (last.kind != NKV_EVENT_CLOSED) {
            recorder_dump(both[i], "close");
        }
        CHECK(last.kind == NKV_EVENT_CLOSED, "last event before free is %s, expected CLOSED",
              kind_name(last.kind));
        CHECK(last.key == NULL, "CLOSED carries a key");
        size_t closed = 0;
        for (size_t j = 0; j < n; j++) {
            closed += recorder_get(both[i], j).kind == NKV_EVENT_CLOSED;
        }
        CHECK(closed == 1, "%zu CLOSED events, expected 1", closed);
        recorder_check_invariants(both[i], "close");
    }
    recorder_destroy(&a);
    recorder_destroy(&b);
}

static void test_subscribe_since(nkv_client *c) {
    uint64_t r1 = 0, r2 = 0, r3 = 0, r4 = 0;
    put_str(c, "w.a", "a", &r1);
    put_str(c, "w.b", "b", &r2);
    CHECK_OK(nkv_delete(c, "w.a", &r3));
    put_str(c, "w.c", "c", &r4);

    recorder r;
    recorder_init(&r);
    uint64_t sub = 0;
    CHECK_OK(nkv_subscribe_since(c, "w", r1, recorder_cb, &r, recorder_free, &sub));
    long synced = recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS);
    CHECK(synced >= 0, "resume: no SYNCED");
    if (synced != 3) {
        recorder_dump(&r, "resume");
    }
    CHECK(synced == 3, "resume since %llu: %ld events before SYNCED, expected 3",
          (unsigned long long)r1, synced);
    long id = find_key(&r, 0, 3, NKV_EVENT_DELETE, "w.a");
    CHECK(id >= 0 && recorder_get(&r, (size_t)id).revision == r3,
          "resume: no DELETE w.a at %llu", (unsigned long long)r3);
    long ib = find_key(&r, 0, 3, NKV_EVENT_UPDATE, "w.b");
    long ic = find_key(&r, 0, 3, NKV_EVENT_UPDATE, "w.c");
    CHECK(ib >= 0 && ic >= 0, "resume: w.b or w.c missing");
    check_update(&r, (size_t)ib, "w.b", "b", r2);
    check_update(&r, (size_t)ic, "w.c", "c", r4);
    CHECK(recorder_get(&r, 3).revision >= r4, "SYNCED revision too low");
    CHECK_OK(nkv_unsubscribe(c, sub));
    recorder_destroy(&r);

    /* since = the current revision: nothing before SYNCED */
    recorder_init(&r);
    CHECK_OK(nkv_subscribe_since(c, "w", r4, recorder_cb, &r, recorder_free, &sub));
    synced = recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS);
    CHECK(synced == 0, "resume from the current revision: SYNCED is event %ld", synced);
    put_str(c, "w.live", "l", NULL);
    CHECK(recorder_wait_for(&r, 1, NKV_EVENT_UPDATE, "w.live", WAIT_MS) == 1, "no live event");
    CHECK_OK(nkv_unsubscribe(c, sub));
    recorder_destroy(&r);

    /* since in the future: RESET, full snapshot, SYNCED */
    recorder_init(&r);
    CHECK_OK(nkv_subscribe_since(c, "w", r4 + 1000000, recorder_cb, &r, recorder_free, &sub));
    synced = recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS);
    CHECK(synced >= 0, "no SYNCED after a resume from the future");
    CHECK(recorder_get(&r, 0).kind == NKV_EVENT_RESET, "first event is %s, expected RESET",
          kind_name(recorder_get(&r, 0).kind));
    rec_event reset = recorder_get(&r, 0);
    CHECK(reset.key == NULL && reset.data == NULL && reset.revision == 0,
          "RESET carries data");
    CHECK(synced == 4, "RESET + 3 keys (w.b, w.c, w.live) + SYNCED expected, SYNCED at %ld",
          synced);
    CHECK(find_key(&r, 1, 4, NKV_EVENT_UPDATE, "w.b") > 0 &&
              find_key(&r, 1, 4, NKV_EVENT_UPDATE, "w.c") > 0 &&
              find_key(&r, 1, 4, NKV_EVENT_UPDATE, "w.live") > 0,
          "snapshot after RESET incomplete");
    CHECK_OK(nkv_unsubscribe(c, sub));
    recorder_check_invariants(&r, "since");
    recorder_destroy(&r);
}

/* A slow callback: updates to one key may be folded, but every update is
 * accounted for in `coalesced` and the last value always arrives. */
static void test_slow_consumer_coalesces(nkv_client *c) {
    recorder r;
    recorder_init(&r);
    r.delay_ms = 10;
    uint64_t sub = 0;
    CHECK_OK(nkv_subscribe(c, "co", recorder_cb, &r, recorder_free, &sub));
    CHECK(recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) >= 0, "no SYNCED");
    const int n = 200;
    uint64_t last_rev = 0;
    char buf[32];
    for (int i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "v%d", i);
        put_str(c, "co.k", buf, &last_rev);
    }
    put_str(c, "co.end", "end", NULL);
    CHECK(recorder_wait_for(&r, 0, NKV_EVENT_UPDATE, "co.end", 60000) >= 0,
          "the last event never arrived");
    pthread_mutex_lock(&r.mu);
    r.delay_ms = 0;
    pthread_mutex_unlock(&r.mu);
    uint64_t accounted = 0, prev = 0;
    rec_event last;
    memset(&last, 0, sizeof last);
    size_t events = 0;
    for (size_t i = 0; i < recorder_count(&r); i++) {
        rec_event e = recorder_get(&r, i);
        if (e.kind == NKV_EVENT_UPDATE && strcmp(e.key, "co.k") == 0) {
            CHECK(e.revision > prev, "co.k revisions out of order");
            prev = e.revision;
            accounted += 1 + e.coalesced;
            last = e;
            events++;
        }
    }
    CHECK(last.revision == last_rev && strcmp((const char *)last.data, "v199") == 0,
          "last co.k event is \"%s\" at %llu, expected v199 at %llu", (const char *)last.data,
          (unsigned long long)last.revision, (unsigned long long)last_rev);
    CHECK(accounted == (uint64_t)n, "%zu events with coalesced counts account for %llu of %d updates",
          events, (unsigned long long)accounted, n);
    printf("slow consumer: %d updates arrived as %zu events\n", n, events);
    CHECK_OK(nkv_unsubscribe(c, sub));
    recorder_check_invariants(&r, "slow consumer");
    recorder_destroy(&r);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    nkv_client *c = test_connect();
    test_snapshot_synced_live(c);
    test_one_dispatcher_per_client(c);
    test_unsubscribe_waits_for_running_callback(c);
    test_unsubscribe_from_inside_callback(c);
    test_subscribe_since(c);
    test_slow_consumer_coalesces(c);
    nkv_close(c);
    test_close_ends_subscriptions();
    printf("test_callbacks: OK\n");
    return 0;
}
