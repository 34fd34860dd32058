/*
 * test_slow_consumer.c: a callback slower than the writers costs bounded
 * memory.
 *
 * A subscription whose callback sleeps 5 ms per event watches 50 keys while
 * writer threads on another connection put 20,000 updates of 4,000 bytes
 * (80 MB in all) as fast as the server takes them. The client's queue for
 * the subscription must coalesce once it holds queue_limit (1024) events:
 * the callback sees events with coalesced > 0, every update is accounted
 * for (events + coalesced), the final value of every key arrives, and the
 * process's resident memory grows by less than RSS_BOUND_MIB.
 *
 * Why 16 MiB: a coalescing queue holds at most queue_limit + 50 events
 * (1,074 x 4 KB = 4.2 MiB) plus what is in flight on the socket (the
 * server's output buffer is 64 KiB); 16 MiB leaves room for allocator
 * slack and thread stacks. The old client queued every event: 20,000 x 4 KB
 * = 78 MiB of values alone (it was measured growing by 154 MiB).
 *
 * Under valgrind (NKV_TEST_VALGRIND=1) the updates scale down to 5,000 and
 * the memory bound is not checked: memcheck keeps freed blocks (20 MB by
 * default) and shadow memory, so RSS says nothing about the client there.
 * NKV_TEST_QUEUE_LIMIT overrides the queue limit (to show that the memory
 * bound fails without coalescing: e.g. 100000000).
 *
 * Needs NKV_ADDR (a live, empty server; tests/c_api.rs starts it with
 * --fsync never, as durability is not the point here).
 */
#include "nkv_test.h"

#include <stdatomic.h>

#define KEYS 50
#define VALUE_BYTES 4000
#define WRITERS 4
#define DELAY_MS 5
#define RSS_BOUND_MIB 16

static int updates; /* in all, over KEYS keys */

/* What the callback saw; touched only by the callback (one at a time) and
 * by main once the callback is known to be idle. */
struct seen {
    uint64_t id;                 /* out_subscription */
    atomic_bool slow;            /* sleep DELAY_MS per event */
    atomic_long events;          /* UPDATE events */
    atomic_long synced;
    uint64_t accounted;          /* sum of 1 + coalesced */
    uint64_t coalesced_events;   /* events with coalesced > 0 */
    uint64_t max_coalesced;
    long last_seq[KEYS];         /* the sequence number in the last value seen */
    uint64_t last_rev[KEYS];
    long bad;                    /* malformed events */
    long wrong_id;
    atomic_bool end_seen;        /* the UPDATE of slow.end arrived */
};

static struct seen seen;

static void slow_cb(void *user_data, const nkv_event *ev) {
    struct seen *s = (struct seen *)user_data;
    if (ev->subscription != s->id) {
        s->wrong_id++;
    }
    if (ev->kind == NKV_EVENT_SYNCED) {
        atomic_fetch_add(&s->synced, 1);
        return;
    }
    if (ev->kind != NKV_EVENT_UPDATE) {
        return;
    }
    if (strcmp(ev->key, "slow.end") == 0) {
        atomic_store(&s->end_seen, true);
        return;
    }
    int k = -1;
    long seq = -1;
    if (sscanf(ev->key, "slow.k%d", &k) != 1 || k < 0 || k >= KEYS || ev->len != VALUE_BYTES ||
        sscanf((const char *)ev->data, "%ld", &seq) != 1) {
        s->bad++;
        return;
    }
    if (ev->revision <= s->last_rev[k]) {
        s->bad++; /* per key, events come in revision order */
    }
    s->last_seq[k] = seq;
    s->last_rev[k] = ev->revision;
    s->accounted += 1 + ev->coalesced;
    if (ev->coalesced > 0) {
        s->coalesced_events++;
        if (ev->coalesced > s->max_coalesced) {
            s->max_coalesced = ev->coalesced;
        }
    }
    atomic_fetch_add(&s->events, 1);
    if (atomic_load(&s->slow)) {
        sleep_ms(DELAY_MS);
    }
}

struct writer {
    nkv_client *c;
    int id;
    long last_seq[KEYS];      /* per key: the last sequence this writer put */
    uint64_t last_rev[KEYS];
    char error[200];
};

/* Writer w puts updates w, w + WRITERS, ... ; update i goes to key i % KEYS
 * and carries the sequence number i at the start of its value. */
static void *writer_main(void *arg) {
    struct writer *w = (struct writer *)arg;
    char *value = (char *)malloc(VALUE_BYTES);
    memset(value, 'x', VALUE_BYTES);
    char key[32];
    for (long i = w->id; i < updates; i += WRITERS) {
        int k = (int)(i % KEYS);
        snprintf(key, sizeof key, "slow.k%d", k);
        int n = snprintf(value, 24, "%ld", i);
        value[n] = ' ';
        value[VALUE_BYTES - 1] = 0;
        uint64_t rev = 0;
        nkv_status s = nkv_put(w->c, key, NKV_NUL, value, VALUE_BYTES, &rev);
        if (s != NKV_OK) {
            snprintf(w->error, sizeof w->error, "put %s: %s", key, nkv_status_str(s));
            break;
        }
        w->last_seq[k] = i;
        w->last_rev[k] = rev;
    }
    free(value);
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    bool vg = under_valgrind();
    updates = vg ? 5000 : 20000;
    watchdog_program("test_slow_consumer");

    nkv_options *o = nkv_options_new();
    CHECK(o != NULL, "nkv_options_new");
    const char *limit = getenv("NKV_TEST_QUEUE_LIMIT");
    if (limit != NULL) {
        CHECK_OK(nkv_options_set_queue_limit(o, (size_t)atoll(limit)));
        printf("queue limit set to %s\n", limit);
    }
    nkv_client *c = NULL;
    CHECK_OK(nkv_connect_opts(test_addr(), o, &c));
    nkv_options_free(o);
    nkv_client *wc = test_connect(); /* the writers' connection */

    memset(&seen, 0, sizeof seen);
    for (int k = 0; k < KEYS; k++) {
        seen.last_seq[k] = -1;
    }
    atomic_store(&seen.slow, true);
    CHECK_OK(nkv_subscribe(c, "slow", NKV_NUL, slow_cb, &seen, NULL, &seen.id));
    int64_t until = now_ms() + WAIT_MS;
    while (atomic_load(&seen.synced) == 0) {
        CHECK(now_ms() < until, "no SYNCED");
        sleep_ms(5);
    }

    long rss0 = proc_status_kib("VmRSS:");
    int64_t t0 = now_ms();
    struct writer w[WRITERS];
    pthread_t th[WRITERS];
    memset(w, 0, sizeof w);
    for (int i = 0; i < WRITERS; i++) {
        w[i].c = wc;
        w[i].id = i;
        for (int k = 0; k < KEYS; k++) {
            w[i].last_seq[k] = -1;
        }
        CHECK(pthread_create(&th[i], NULL, writer_main, &w[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(th[i], NULL);
        CHECK(w[i].error[0] == 0, "writer %d: %s", i, w[i].error);
    }
    int64_t wrote_ms = now_ms() - t0;
    long seen_while_writing = atomic_load(&seen.events);
    /* the queue is fullest when the writers are done */
    sleep_ms(200);
    long rss1 = proc_status_kib("VmRSS:");

    /* drain fast now */
    atomic_store(&seen.slow, false);
    /* each key's final value: the put with the highest revision (writers
     * race, so that need not be the highest sequence number) */
    long final_seq[KEYS];
    uint64_t final_rev[KEYS];
    for (int k = 0; k < KEYS; k++) {
        final_seq[k] = -1;
        final_rev[k] = 0;
        for (int i = 0; i < WRITERS; i++) {
            if (w[i].last_rev[k] > final_rev[k]) {
                final_seq[k] = w[i].last_seq[k];
                final_rev[k] = w[i].last_rev[k];
            }
        }
        CHECK(final_seq[k] >= 0, "key %d was never written", k);
    }
    /* the end marker: once it arrives, everything before it did */
    put_str(wc, "slow.end", "end", NULL);
    until = now_ms() + (vg ? 120000 : 60000);
    while (!atomic_load(&seen.end_seen)) {
        CHECK(now_ms() < until, "the end marker never arrived (%ld events so far)",
              atomic_load(&seen.events));
        sleep_ms(10);
    }
    int64_t total_ms = now_ms() - t0;
    /* after nkv_unsubscribe no callback runs: `seen` is ours to read */
    CHECK_OK(nkv_unsubscribe(c, seen.id));
    /* the peak of the whole run (VmHWM; the kernel updates it lazily, so
     * the reading after the writes counts too), against the size before */
    long hwm = proc_status_kib("VmHWM:");
    if (rss1 > hwm) {
        hwm = rss1;
    }
    long growth_kib = hwm - rss0;

    printf("slow consumer: %d updates of %d bytes over %d keys written in %lld ms; %ld events "
           "seen while writing, %ld in all, %llu with coalesced > 0 (largest %llu), drained "
           "after %lld ms\n",
           updates, VALUE_BYTES, KEYS, (long long)wrote_ms, seen_while_writing,
           atomic_load(&seen.events), (unsigned long long)seen.coalesced_events,
           (unsigned long long)seen.max_coalesced, (long long)total_ms);
    printf("memory: VmRSS %ld KiB before, %ld KiB after writing, peak (VmHWM) %ld KiB: growth "
           "%ld KiB (bound %d MiB%s)\n",
           rss0, rss1, hwm, growth_kib, RSS_BOUND_MIB, vg ? ", not checked under valgrind" : "");

    CHECK(seen.wrong_id == 0, "%ld events carried another subscription id", seen.wrong_id);
    CHECK(seen.bad == 0, "%ld malformed or out-of-order events", seen.bad);
    for (int k = 0; k < KEYS; k++) {
        CHECK(seen.last_seq[k] == final_seq[k] && seen.last_rev[k] == final_rev[k],
              "key slow.k%d: the last value seen is update %ld at revision %llu, the last "
              "written is update %ld at %llu",
              k, seen.last_seq[k], (unsigned long long)seen.last_rev[k], final_seq[k],
              (unsigned long long)final_rev[k]);
    }
    CHECK(seen.accounted == (uint64_t)updates,
          "events plus their coalesced counts account for %llu of %d updates",
          (unsigned long long)seen.accounted, updates);
    CHECK(seen.coalesced_events > 0,
          "no event had coalesced > 0: %ld events for %d updates (the queue did not merge)",
          atomic_load(&seen.events), updates);
    if (!vg) {
        CHECK(growth_kib < RSS_BOUND_MIB * 1024,
              "resident memory grew by %ld KiB (peak), more than %d MiB: the slow "
              "subscription's queue is not bounded",
              growth_kib, RSS_BOUND_MIB);
    }

    nkv_close(wc);
    nkv_close(c);
    watchdog(0, NULL);
    printf("test_slow_consumer: OK\n");
    return 0;
}
