/*
 * test_threads.c: many threads share one client.
 *
 * Eight writer threads put, get and list their own keys through one
 * nkv_client while another thread subscribes and unsubscribes in a loop and a
 * long-lived subscription watches everything. Every answer must be the right
 * one for its thread (no crossed responses), revisions must grow, and the
 * watcher must end with every key's last value.
 *
 * Needs NKV_ADDR (a live, empty server).
 */
#include "nkv_test.h"

#define THREADS 8
#define ROUNDS 150
#define KEYS_PER_THREAD 5

struct writer {
    nkv_client *c;
    int id;
    char error[256];
    uint64_t last_rev[KEYS_PER_THREAD];
};

static void *writer_main(void *arg) {
    struct writer *w = (struct writer *)arg;
    uint64_t prev = 0;
    char key[64], val[64];
    for (int i = 0; i < ROUNDS; i++) {
        int k = i % KEYS_PER_THREAD;
        snprintf(key, sizeof key, "th.%d.%d", w->id, k);
        snprintf(val, sizeof val, "t%d-r%d", w->id, i);
        uint64_t rev = 0;
        nkv_status s = nkv_put(w->c, key, NKV_NUL, BYTES(val), strlen(val), &rev);
        if (s != NKV_OK) {
            snprintf(w->error, sizeof w->error, "put %s: %s", key, nkv_status_str(s));
            return NULL;
        }
        if (rev <= prev) {
            snprintf(w->error, sizeof w->error, "revision went from %llu to %llu",
                     (unsigned long long)prev, (unsigned long long)rev);
            return NULL;
        }
        prev = rev;
        w->last_rev[k] = rev;

        nkv_value *v = NULL;
        s = nkv_get(w->c, key, NKV_NUL, &v);
        if (s != NKV_OK) {
            snprintf(w->error, sizeof w->error, "get %s: %s", key, nkv_status_str(s));
            return NULL;
        }
        if (v->len != strlen(val) || memcmp(v->data, val, v->len) != 0 || v->revision != rev) {
            snprintf(w->error, sizeof w->error, "get %s gave %.*s at %llu, expected %s at %llu",
                     key, (int)v->len, (const char *)v->data, (unsigned long long)v->revision,
                     val, (unsigned long long)rev);
            nkv_value_free(v);
            return NULL;
        }
        nkv_value_free(v);

        if (i % 25 == 0) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "th.%d", w->id);
            nkv_entries *e = NULL;
            s = nkv_list(w->c, prefix, NKV_NUL, &e);
            if (s != NKV_OK) {
                snprintf(w->error, sizeof w->error, "list: %s", nkv_status_str(s));
                return NULL;
            }
            for (size_t j = 0; j < nkv_entries_count(e); j++) {
                const char *k = nkv_entries_key(e, j, NULL);
                if (strncmp(k, prefix, strlen(prefix)) != 0) {
                    snprintf(w->error, sizeof w->error, "list %s returned %s", prefix, k);
                    nkv_entries_free(e);
                    return NULL;
                }
            }
            nkv_entries_free(e);
        }
        if (i % 10 == 0 && nkv_ping(w->c) != NKV_OK) {
            snprintf(w->error, sizeof w->error, "ping failed");
            return NULL;
        }
    }
    return NULL;
}

struct churner {
    nkv_client *c;
    char error[256];
    int cycles;
};

static void *churner_main(void *arg) {
    struct churner *ch = (struct churner *)arg;
    for (int i = 0; i < 30; i++) {
        recorder r;
        recorder_init(&r);
        uint64_t sub = 0;
        nkv_status s = recorder_subscribe(ch->c, "th", &r);
        sub = r.id;
        if (s != NKV_OK) {
            snprintf(ch->error, sizeof ch->error, "subscribe: %s", nkv_status_str(s));
            recorder_destroy(&r);
            return NULL;
        }
        if (i % 3 == 0) {
            recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS);
        }
        s = nkv_unsubscribe(ch->c, sub);
        if (s != NKV_OK) {
            snprintf(ch->error, sizeof ch->error, "unsubscribe: %s", nkv_status_str(s));
            return NULL;
        }
        /* after unsubscribe returns, the recorder may be destroyed at once */
        if (recorder_freed(&r) != 1) {
            snprintf(ch->error, sizeof ch->error, "free_user_data ran %d times",
                     recorder_freed(&r));
            return NULL;
        }
        if (r.after_free || r.overlap || r.free_during_cb || r.wrong_id || r.bad_key_len) {
            snprintf(ch->error, sizeof ch->error, "callback contract broken under churn");
            return NULL;
        }
        recorder_destroy(&r);
        ch->cycles++;
    }
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    watchdog_program("test_threads");
    nkv_client *c = test_connect();

    recorder watch;
    recorder_init(&watch);
    uint64_t wsub = 0;
    CHECK_OK(recorder_subscribe(c, "th", &watch));
    wsub = watch.id;
    CHECK(recorder_wait_for(&watch, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 0, "watch: SYNCED");

    struct writer w[THREADS];
    pthread_t tw[THREADS];
    memset(w, 0, sizeof w);
    for (int i = 0; i < THREADS; i++) {
        w[i].c = c;
        w[i].id = i;
        CHECK(pthread_create(&tw[i], NULL, writer_main, &w[i]) == 0, "pthread_create");
    }
    struct churner ch;
    memset(&ch, 0, sizeof ch);
    ch.c = c;
    pthread_t tc;
    CHECK(pthread_create(&tc, NULL, churner_main, &ch) == 0, "pthread_create");

    for (int i = 0; i < THREADS; i++) {
        pthread_join(tw[i], NULL);
    }
    pthread_join(tc, NULL);
    for (int i = 0; i < THREADS; i++) {
        CHECK(w[i].error[0] == 0, "writer %d: %s", i, w[i].error);
    }
    CHECK(ch.error[0] == 0, "subscribe/unsubscribe thread: %s", ch.error);
    CHECK(ch.cycles == 30, "churner did %d cycles", ch.cycles);

    /* the watcher saw every key's final value, and accounts for every put */
    put_str(c, "th.end", "end", NULL);
    CHECK(recorder_wait_for(&watch, 1, NKV_EVENT_UPDATE, "th.end", 60000) > 0,
          "watcher never saw th.end");
    uint64_t accounted = 0;
    for (int t = 0; t < THREADS; t++) {
        for (int k = 0; k < KEYS_PER_THREAD; k++) {
            char key[64], want[64];
            snprintf(key, sizeof key, "th.%d.%d", t, k);
            int last_round = ROUNDS - KEYS_PER_THREAD + k;
            snprintf(want, sizeof want, "t%d-r%d", t, last_round);
            rec_event last;
            memset(&last, 0, sizeof last);
            for (size_t i = 0; i < recorder_count(&watch); i++) {
                rec_event e = recorder_get(&watch, i);
                if (e.kind == NKV_EVENT_UPDATE && strcmp(e.key, key) == 0) {
                    last = e;
                    accounted += 1 + e.coalesced;
                }
            }
            CHECK(last.key != NULL, "watcher never saw %s", key);
            CHECK(strcmp((const char *)last.data, want) == 0 &&
                      last.revision == w[t].last_rev[k],
                  "watcher ended with %s=%s at %llu, expected %s at %llu", key,
                  (const char *)last.data, (unsigned long long)last.revision, want,
                  (unsigned long long)w[t].last_rev[k]);
        }
    }
    CHECK(accounted == (uint64_t)THREADS * ROUNDS,
          "watcher events account for %llu of %d puts", (unsigned long long)accounted,
          THREADS * ROUNDS);

    CHECK_OK(nkv_unsubscribe(c, wsub));
    recorder_check_invariants(&watch, "watcher");
    recorder_destroy(&watch);
    nkv_close(c);
    printf("test_threads: OK (%d threads x %d rounds)\n", THREADS, ROUNDS);
    return 0;
}
