/*
 * test_callbacks.c: the subscription callback contract.
 *
 * - snapshot (one UPDATE per existing key), then SYNCED, then live events in
 *   revision order, only for keys the prefix covers;
 * - every callback of a client on one dispatcher thread, never two at once;
 * - nkv_unsubscribe returns only when no callback of that subscription runs
 *   or will run, having called free_user_data exactly once, on its thread;
 * - nkv_unsubscribe from inside a callback does not deadlock; unsubscribing
 *   another subscription there has freed it when it returns;
 * - nkv_unsubscribe(B) waits for B's running callback only, never behind A's
 *   (blocked) callback or A's queued events;
 * - no callback runs before nkv_subscribe has stored the id;
 * - nkv_close ends each subscription with a CLOSED event, then frees, all
 *   before it returns (from the main thread), or right after the callback
 *   that called it (from inside a callback, with callbacks still queued);
 * - nkv_subscribe_since resumes; coalesced counts add up.
 *
 * Needs NKV_ADDR (a live, empty server). Every wait that a regression could
 * turn into a deadlock runs under a watchdog (alarm), which fails the
 * program instead of letting it hang.
 */
#include "nkv_test.h"

#include <stdatomic.h>

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
    CHECK_OK(recorder_subscribe(c, "s", &r));
    sub = r.id;
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
    CHECK_OK(nkv_delete(c, "s.b", NKV_NUL, &r2));
    put_str(c, "sx", "ignored", NULL);
    put_str(c, "s.new", "new", &r3);
    CHECK_OK(nkv_delete_prefix(c, "s.c", NKV_NUL, &r4, &count));
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
    CHECK_OK(recorder_subscribe(c, "m", &a));
    sa = a.id;
    CHECK_OK(recorder_subscribe(c, "", &b));
    sb = b.id;
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
    CHECK_OK(recorder_subscribe(c, "u", &s.r));
    sub = s.r.id;
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
    recorder *other;
    nkv_status own_status;
    nkv_status other_status;
    int other_freed_at_return;  /* free_user_data(other) calls when nkv_unsubscribe returned */
    bool other_freed_here;      /* ... on this (the callback's) thread */
    int own_freed_at_return;    /* free_user_data(own): must wait for the callback's end */
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
    /* another subscription's free_user_data has run, here, before the
     * return (it is not running: this callback is) */
    int other_freed = recorder_freed(s->other);
    bool other_here = recorder_freed_here(s->other);
    nkv_status sw = nkv_unsubscribe(s->c, own);
    int own_freed = recorder_freed(r); /* must be 0: this callback still runs */
    pthread_mutex_lock(&s->mu);
    s->other_status = so;
    s->own_status = sw;
    s->other_freed_at_return = other_freed;
    s->other_freed_here = other_here;
    s->own_freed_at_return = own_freed;
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
    CHECK_OK(recorder_subscribe(c, "x", &s.r));
    own = s.r.id;
    CHECK_OK(recorder_subscribe(c, "x", &other));
    oth = other.id;
    CHECK_OK(recorder_subscribe(c, "x", &witness));
    wit = witness.id;
    pthread_mutex_lock(&s.mu);
    s.own_id = own;
    s.other_id = oth;
    s.other = &other;
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
    int called = s.called, other_freed_at_return = s.other_freed_at_return;
    int own_freed_at_return = s.own_freed_at_return;
    bool other_freed_here = s.other_freed_here;
    pthread_mutex_unlock(&s.mu);
    CHECK(other_freed_at_return == 1,
          "nkv_unsubscribe(B) inside A's callback returned before free_user_data(B) ran "
          "(%d calls at its return)",
          other_freed_at_return);
    CHECK(other_freed_here,
          "free_user_data(B) did not run on the thread that called nkv_unsubscribe(B)");
    CHECK(own_freed_at_return == 0,
          "nkv_unsubscribe(own) inside its own callback freed the user data the callback "
          "still uses");
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
static pthread_t heap_free_thread;
static void heap_free(void *p) {
    heap_frees++;
    heap_free_thread = pthread_self();
    free(p);
}
static void heap_cb(void *user_data, const nkv_event *ev) {
    int *n = (int *)user_data;
    (void)ev;
    (*n)++;
}

/* A callback that blocks on one key until told to go on. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const char *key; /* the key whose UPDATE blocks */
    int entered;     /* the callback is blocked */
    int release;     /* main: go on */
};

static void gate_init(struct gate *g, const char *key) {
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->key = key;
}

static void gate_destroy(struct gate *g) {
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

static void gate_hook(recorder *r, const nkv_event *ev) {
    struct gate *g = (struct gate *)r->hook_arg;
    if (ev->kind != NKV_EVENT_UPDATE || strcmp(ev->key, g->key) != 0) {
        return;
    }
    pthread_mutex_lock(&g->mu);
    g->entered = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->release) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

static void gate_wait_entered(struct gate *g) {
    struct timespec ts;
    deadline_ts(&ts, WAIT_MS);
    pthread_mutex_lock(&g->mu);
    while (!g->entered) {
        CHECK(pthread_cond_timedwait(&g->cv, &g->mu, &ts) != ETIMEDOUT,
              "the blocking callback on %s never started", g->key);
    }
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(struct gate *g) {
    pthread_mutex_lock(&g->mu);
    g->release = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void *open_gate_later(void *arg) {
    sleep_ms(200);
    gate_open((struct gate *)arg);
    return NULL;
}

/* nkv_close from the main thread while a callback runs and events wait:
 * it waits for that callback, then runs every subscription's CLOSED event
 * and free_user_data on the closing thread, all before it returns. */
static void test_close_from_main_thread(void) {
    nkv_client *c = test_connect();
    recorder a, b, blocked;
    recorder_init(&a);
    recorder_init(&b);
    recorder_init(&blocked);
    struct gate g;
    gate_init(&g, "cl.block");
    blocked.hook = gate_hook;
    blocked.hook_arg = &g;
    CHECK_OK(recorder_subscribe(c, "cl", &a));
    CHECK_OK(recorder_subscribe(c, "", &b));
    CHECK_OK(recorder_subscribe(c, "cl.block", &blocked));
    int *heap = (int *)calloc(1, sizeof(int));
    heap_frees = 0;
    uint64_t sh = 0;
    CHECK_OK(nkv_subscribe(c, "cl", NKV_NUL, heap_cb, heap, heap_free, &sh));
    put_str(c, "cl.k", "v", NULL);
    CHECK(recorder_wait_for(&a, 0, NKV_EVENT_UPDATE, "cl.k", WAIT_MS) >= 0, "no event");
    CHECK(recorder_wait_for(&b, 0, NKV_EVENT_UPDATE, "cl.k", WAIT_MS) >= 0, "no event");

    /* one callback blocks the dispatcher; more events queue up behind it */
    put_str(c, "cl.block", "v", NULL);
    gate_wait_entered(&g);
    char key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "cl.q%d", i);
        put_str(c, key, "queued", NULL);
    }
    /* the blocked callback goes on only once nkv_close is (likely) waiting */
    pthread_t opener;
    CHECK(pthread_create(&opener, NULL, open_gate_later, &g) == 0, "pthread_create");

    watchdog(WAIT_MS / 1000, "nkv_close from the main thread");
    nkv_close(c);
    watchdog_program("test_callbacks");
    pthread_join(opener, NULL);
    /* everything below was done before nkv_close returned */
    CHECK(recorder_freed(&a) == 1 && recorder_freed(&b) == 1 && recorder_freed(&blocked) == 1 &&
              heap_frees == 1,
          "when nkv_close returned free_user_data had run %d, %d, %d, %d times (expected once "
          "each)",
          recorder_freed(&a), recorder_freed(&b), recorder_freed(&blocked), heap_frees);
    CHECK(pthread_equal(heap_free_thread, pthread_self()),
          "free_user_data ran on another thread than nkv_close's");
    recorder *all[3] = {&a, &b, &blocked};
    for (int i = 0; i < 3; i++) {
        size_t n = recorder_count(all[i]);
        CHECK(n > 0, "no events");
        rec_event last = recorder_get(all[i], n - 1);
        if (last.kind != NKV_EVENT_CLOSED) {
            recorder_dump(all[i], "close");
        }
        CHECK(last.kind == NKV_EVENT_CLOSED,
              "when nkv_close returned the last event was %s, expected CLOSED",
              kind_name(last.kind));
        CHECK(last.key == NULL && last.data != NULL && last.len > 0,
              "CLOSED carries a key or no reason");
        size_t closed = 0;
        for (size_t j = 0; j < n; j++) {
            closed += recorder_get(all[i], j).kind == NKV_EVENT_CLOSED;
        }
        CHECK(closed == 1, "%zu CLOSED events, expected 1", closed);
        CHECK(recorder_freed_here(all[i]), "free_user_data ran on another thread than nkv_close's");
        pthread_mutex_lock(&all[i]->mu);
        bool closed_here = all[i]->have_closed_thread &&
                           pthread_equal(all[i]->closed_thread, pthread_self());
        pthread_mutex_unlock(&all[i]->mu);
        CHECK(closed_here, "the CLOSED event ran on another thread than nkv_close's");
        recorder_check_invariants(all[i], "close");
    }
    recorder_destroy(&a);
    recorder_destroy(&b);
    recorder_destroy(&blocked);
    gate_destroy(&g);
}

/* nkv_close from inside a callback while callbacks of other subscriptions
 * are still queued. */
#define CLOSE_SUBS 5
struct inside_close {
    nkv_client *c;
    recorder r[CLOSE_SUBS];
    pthread_mutex_t mu;
    bool closing;        /* the closer is about to call nkv_close */
    bool closed;         /* nkv_close returned inside the callback */
    int late_events;     /* non-CLOSED events delivered after nkv_close began */
    int state_calls;     /* nkv_state calls the callbacks made (before close) */
    bool writes_done;    /* main: every queued write was answered */
    pthread_cond_t cv;
    pthread_t closer_thread;
};

static struct inside_close ic;

static void inside_close_hook(recorder *r, const nkv_event *ev) {
    pthread_mutex_lock(&ic.mu);
    bool closing = ic.closing;
    pthread_mutex_unlock(&ic.mu);
    if (ev->kind == NKV_EVENT_CLOSED) {
        return;
    }
    if (closing) {
        /* nkv_close ended every subscription: only CLOSED may follow */
        pthread_mutex_lock(&ic.mu);
        ic.late_events++;
        pthread_mutex_unlock(&ic.mu);
    }
    /* What real callbacks do: use the client. With the old library a
     * callback queued behind nkv_close's did this on freed memory. */
    (void)nkv_state(ic.c);
    pthread_mutex_lock(&ic.mu);
    ic.state_calls++;
    pthread_mutex_unlock(&ic.mu);

    if (r == &ic.r[0] && ev->kind == NKV_EVENT_UPDATE && strcmp(ev->key, "ic.close") == 0) {
        /* wait until the other subscriptions have events queued */
        struct timespec ts;
        deadline_ts(&ts, WAIT_MS);
        pthread_mutex_lock(&ic.mu);
        while (!ic.writes_done) {
            CHECK(pthread_cond_timedwait(&ic.cv, &ic.mu, &ts) != ETIMEDOUT,
                  "main never finished its writes");
        }
        ic.closing = true;
        ic.closer_thread = pthread_self();
        pthread_mutex_unlock(&ic.mu);
        sleep_ms(100); /* let the events of those writes reach the client */
        nkv_close(ic.c);
        pthread_mutex_lock(&ic.mu);
        ic.closed = true;
        pthread_mutex_unlock(&ic.mu);
        /* this callback goes on for a while after nkv_close returned */
        sleep_ms(50);
    }
}

static void test_close_from_inside_callback(void) {
    memset(&ic, 0, sizeof ic);
    pthread_mutex_init(&ic.mu, NULL);
    pthread_cond_init(&ic.cv, NULL);
    ic.c = test_connect();
    nkv_client *writer = test_connect();
    for (int i = 0; i < CLOSE_SUBS; i++) {
        recorder_init(&ic.r[i]);
        ic.r[i].hook = inside_close_hook;
        CHECK_OK(recorder_subscribe(ic.c, "ic", &ic.r[i]));
    }
    for (int i = 0; i < CLOSE_SUBS; i++) {
        CHECK(recorder_wait_for(&ic.r[i], 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 0, "SYNCED");
    }
    /* the closer's callback blocks the dispatcher on ic.close while 30
     * more updates queue up for every subscription */
    put_str(writer, "ic.close", "now", NULL);
    char key[32];
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof key, "ic.q%d", i);
        put_str(writer, key, "queued", NULL);
    }
    pthread_mutex_lock(&ic.mu);
    ic.writes_done = true;
    pthread_cond_broadcast(&ic.cv);
    pthread_mutex_unlock(&ic.mu);

    watchdog(WAIT_MS / 1000, "nkv_close from inside a callback");
    for (int i = 0; i < CLOSE_SUBS; i++) {
        CHECK(recorder_wait_freed(&ic.r[i], 1, WAIT_MS),
              "subscription %d: free_user_data never ran after nkv_close inside a callback", i);
    }
    watchdog_program("test_callbacks");
    sleep_ms(100); /* a second free would come now */

    pthread_mutex_lock(&ic.mu);
    bool closed = ic.closed;
    int late = ic.late_events;
    pthread_t closer = ic.closer_thread;
    pthread_mutex_unlock(&ic.mu);
    CHECK(closed, "nkv_close inside the callback did not return");
    CHECK(late == 0, "%d events other than CLOSED were delivered after nkv_close", late);
    for (int i = 0; i < CLOSE_SUBS; i++) {
        recorder *r = &ic.r[i];
        size_t n = recorder_count(r);
        size_t closed_events = 0;
        for (size_t j = 0; j < n; j++) {
            closed_events += recorder_get(r, j).kind == NKV_EVENT_CLOSED;
        }
        if (closed_events != 1 || recorder_get(r, n - 1).kind != NKV_EVENT_CLOSED) {
            recorder_dump(r, "close inside a callback");
        }
        CHECK(closed_events == 1, "subscription %d got %zu CLOSED events, expected 1", i,
              closed_events);
        CHECK(recorder_get(r, n - 1).kind == NKV_EVENT_CLOSED,
              "subscription %d: the last event is not CLOSED", i);
        CHECK(recorder_freed(r) == 1, "subscription %d: free_user_data ran %d times", i,
              recorder_freed(r));
        /* right after the closing callback returned, on its thread */
        pthread_mutex_lock(&r->mu);
        bool same = r->have_free_thread && pthread_equal(r->free_thread, closer) &&
                    r->have_closed_thread && pthread_equal(r->closed_thread, closer);
        pthread_mutex_unlock(&r->mu);
        CHECK(same, "subscription %d: CLOSED or free_user_data ran on another thread than the "
                    "callback that closed",
              i);
        recorder_check_invariants(r, "close inside a callback");
    }
    nkv_close(writer);
    for (int i = 0; i < CLOSE_SUBS; i++) {
        recorder_destroy(&ic.r[i]);
    }
    pthread_mutex_destroy(&ic.mu);
    pthread_cond_destroy(&ic.cv);
}

/* nkv_unsubscribe(B) waits for B's own running callback only: not behind A's
 * blocked callback nor A's queued events, and not for a lock the caller holds
 * that A's callback takes. */
static pthread_mutex_t lock_m = PTHREAD_MUTEX_INITIALIZER;
static atomic_int lock_hook_entered;

static void lock_hook(recorder *r, const nkv_event *ev) {
    (void)r;
    if (ev->kind != NKV_EVENT_UPDATE || strcmp(ev->key, "fa.lock") != 0) {
        return;
    }
    atomic_store(&lock_hook_entered, 1);
    pthread_mutex_lock(&lock_m); /* main holds it while it unsubscribes B */
    pthread_mutex_unlock(&lock_m);
}

static void test_unsubscribe_does_not_wait_for_others(nkv_client *c) {
    /* 1. A's callback waits for a condition main signals only after
     *    nkv_unsubscribe(B) returned; A holds many queued events. */
    recorder a, b;
    recorder_init(&a);
    recorder_init(&b);
    struct gate g;
    gate_init(&g, "fa.block");
    a.hook = gate_hook;
    a.hook_arg = &g;
    CHECK_OK(recorder_subscribe(c, "fa", &a));
    CHECK_OK(recorder_subscribe(c, "fb", &b));
    CHECK(recorder_wait_for(&a, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 0, "A: SYNCED");
    CHECK(recorder_wait_for(&b, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 0, "B: SYNCED");
    put_str(c, "fa.block", "v", NULL);
    gate_wait_entered(&g);
    char key[32];
    const int queued = 200;
    for (int i = 0; i < queued; i++) {
        snprintf(key, sizeof key, "fa.q%d", i);
        put_str(c, key, "queued", NULL);
    }
    put_str(c, "fb.x", "for B, queued too", NULL);
    CHECK_OK(nkv_ping(c));

    watchdog(WAIT_MS / 1000,
             "nkv_unsubscribe(B) while A's callback blocks (waits behind A's events?)");
    int64_t t0 = now_ms();
    CHECK_OK(nkv_unsubscribe(c, b.id));
    int64_t took = now_ms() - t0;
    watchdog_program("test_callbacks");
    CHECK(recorder_freed(&b) == 1 && recorder_freed_here(&b),
          "free_user_data(B) did not run on this thread before nkv_unsubscribe returned");
    CHECK(recorder_count(&b) == 1, "B's queued event ran after all (%zu events)",
          recorder_count(&b));
    pthread_mutex_lock(&g.mu);
    bool still_blocked = g.entered && !g.release;
    pthread_mutex_unlock(&g.mu);
    CHECK(still_blocked, "A's callback is not blocked any more");
    printf("nkv_unsubscribe(B) behind a blocked A with %d queued events: %lld ms\n", queued,
           (long long)took);
    gate_open(&g);
    snprintf(key, sizeof key, "fa.q%d", queued - 1);
    CHECK(recorder_wait_for(&a, 0, NKV_EVENT_UPDATE, key, WAIT_MS) >= 0,
          "A's queued events were lost");
    recorder_check_invariants(&b, "B");

    /* 2. main holds a lock that A's callback takes, and unsubscribes B2 */
    recorder b2;
    recorder_init(&b2);
    a.hook = lock_hook; /* only A's callback reads it, and A is idle now */
    CHECK_OK(recorder_subscribe(c, "fb", &b2));
    CHECK(recorder_wait_for(&b2, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) >= 0, "B2: SYNCED");
    pthread_mutex_lock(&lock_m);
    put_str(c, "fa.lock", "v", NULL);
    put_str(c, "fb.y", "for B2", NULL);
    int64_t until = now_ms() + WAIT_MS;
    while (!atomic_load(&lock_hook_entered)) {
        CHECK(now_ms() < until, "A's callback never reached the lock");
        sleep_ms(1);
    }
    sleep_ms(50); /* A is now blocked on the lock main holds */
    watchdog(WAIT_MS / 1000, "nkv_unsubscribe(B2) holding a lock A's callback waits for");
    CHECK_OK(nkv_unsubscribe(c, b2.id));
    watchdog_program("test_callbacks");
    CHECK(recorder_freed(&b2) == 1 && recorder_freed_here(&b2),
          "free_user_data(B2) did not run here before nkv_unsubscribe returned");
    pthread_mutex_unlock(&lock_m);

    put_str(c, "fa.end", "v", NULL);
    CHECK(recorder_wait_for(&a, 0, NKV_EVENT_UPDATE, "fa.end", WAIT_MS) >= 0, "A stalled");
    CHECK_OK(nkv_unsubscribe(c, a.id));
    recorder_check_invariants(&a, "A");
    recorder_check_invariants(&b2, "B2");
    recorder_destroy(&a);
    recorder_destroy(&b);
    recorder_destroy(&b2);
    gate_destroy(&g);
}

/* No callback runs before nkv_subscribe has returned: with keys that exist
 * the snapshot event is ready at once, yet its callback must find the id
 * already stored in *out_subscription (which nkv_subscribe writes before
 * returning), and equal to event->subscription. The old library called back
 * as soon as the server confirmed, racing the caller's return. */
#define EARLY_SUBS 300
struct early {
    uint64_t id; /* nkv_subscribe's out_subscription */
    atomic_int calls;
    int bad;     /* events seen before the id was stored, or with another id */
    uint64_t bad_seen_id, bad_event_id;
    int freed;
};

static void early_cb(void *user_data, const nkv_event *ev) {
    struct early *e = (struct early *)user_data;
    atomic_fetch_add(&e->calls, 1);
    if (e->id == 0 || ev->subscription != e->id) {
        if (e->bad++ == 0) {
            e->bad_seen_id = e->id;
            e->bad_event_id = ev->subscription;
        }
    }
}

static void early_free(void *user_data) {
    ((struct early *)user_data)->freed++;
}

static void test_no_callback_before_subscribe_returns(nkv_client *c) {
    put_str(c, "early.k", "exists", NULL);
    struct early *subs = (struct early *)calloc(EARLY_SUBS, sizeof *subs);
    for (int i = 0; i < EARLY_SUBS; i++) {
        CHECK_OK(nkv_subscribe(c, "early", NKV_NUL, early_cb, &subs[i], early_free, &subs[i].id));
    }
    /* every subscription got its snapshot and SYNCED */
    int64_t until = now_ms() + WAIT_MS;
    for (int i = 0; i < EARLY_SUBS; i++) {
        while (atomic_load(&subs[i].calls) < 2) {
            CHECK(now_ms() < until, "subscription %d: %d events, expected 2", i,
                  atomic_load(&subs[i].calls));
            sleep_ms(5);
        }
    }
    for (int i = 0; i < EARLY_SUBS; i++) {
        CHECK_OK(nkv_unsubscribe(c, subs[i].id));
    }
    int bad = 0, first = -1;
    for (int i = 0; i < EARLY_SUBS; i++) {
        CHECK(subs[i].freed == 1, "subscription %d freed %d times", i, subs[i].freed);
        if (subs[i].bad > 0 && first < 0) {
            first = i;
        }
        bad += subs[i].bad > 0;
    }
    CHECK(bad == 0,
          "%d of %d subscriptions were called back before nkv_subscribe had stored their id "
          "(first: #%d saw id %llu, the event said %llu)",
          bad, EARLY_SUBS, first, first >= 0 ? (unsigned long long)subs[first].bad_seen_id : 0ULL,
          first >= 0 ? (unsigned long long)subs[first].bad_event_id : 0ULL);
    free(subs);
}

static void test_subscribe_since(nkv_client *c) {
    uint64_t r1 = 0, r2 = 0, r3 = 0, r4 = 0;
    put_str(c, "w.a", "a", &r1);
    put_str(c, "w.b", "b", &r2);
    CHECK_OK(nkv_delete(c, "w.a", NKV_NUL, &r3));
    put_str(c, "w.c", "c", &r4);

    recorder r;
    recorder_init(&r);
    uint64_t sub = 0;
    CHECK_OK(nkv_subscribe_since(c, "w", NKV_NUL, r1, recorder_cb, &r, recorder_free,
                                 &r.id));
    sub = r.id;
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
    CHECK_OK(nkv_subscribe_since(c, "w", NKV_NUL, r4, recorder_cb, &r, recorder_free,
                                 &r.id));
    sub = r.id;
    synced = recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS);
    CHECK(synced == 0, "resume from the current revision: SYNCED is event %ld", synced);
    put_str(c, "w.live", "l", NULL);
    CHECK(recorder_wait_for(&r, 1, NKV_EVENT_UPDATE, "w.live", WAIT_MS) == 1, "no live event");
    CHECK_OK(nkv_unsubscribe(c, sub));
    recorder_destroy(&r);

    /* since in the future: RESET, full snapshot, SYNCED */
    recorder_init(&r);
    CHECK_OK(nkv_subscribe_since(c, "w", NKV_NUL, r4 + 1000000, recorder_cb, &r, recorder_free,
                                 &r.id));
    sub = r.id;
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
    CHECK_OK(recorder_subscribe(c, "co", &r));
    sub = r.id;
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
    CHECK(accounted == (uint64_t)n,
          "%zu events with coalesced counts account for %llu of %d updates",
          events, (unsigned long long)accounted, n);
    printf("slow consumer: %d updates arrived as %zu events\n", n, events);
    CHECK_OK(nkv_unsubscribe(c, sub));
    recorder_check_invariants(&r, "slow consumer");
    recorder_destroy(&r);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    /* the harness gives up after 150 s; fail with a message before that */
    watchdog_program("test_callbacks");
    nkv_client *c = test_connect();
    test_snapshot_synced_live(c);
    test_one_dispatcher_per_client(c);
    test_unsubscribe_waits_for_running_callback(c);
    test_unsubscribe_from_inside_callback(c);
    test_unsubscribe_does_not_wait_for_others(c);
    watchdog_program("test_callbacks");
    test_no_callback_before_subscribe_returns(c);
    test_subscribe_since(c);
    test_slow_consumer_coalesces(c);
    nkv_close(c);
    test_close_from_main_thread();
    test_close_from_inside_callback();
    watchdog(0, NULL);
    printf("test_callbacks: OK\n");
    return 0;
}
