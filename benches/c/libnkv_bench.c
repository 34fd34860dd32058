/*
 * libnkv_bench: T threads sharing one nkv_client, each calling nkv_get (or
 * nkv_put) in a loop for a fixed time; prints the operations done.
 *
 * Compiled and run by nkv-bench (row 8) against include/nkv.h and the
 * libnkv.so built next to it, and compared with the same calls made in
 * the raw protocol by the bench's own client.
 *
 * usage: libnkv_bench ADDR THREADS SECONDS get|put KEYS VALUE_SIZE
 * output (one line): ops=N elapsed_ns=N
 * exit status: 0, or 1 with a message on stderr at the first failed call
 * (an error answer is never counted as an operation).
 */
#define _POSIX_C_SOURCE 200809L

#include <nkv.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct shared {
    nkv_client *client;
    int put;
    unsigned keys;
    size_t value_size;
    atomic_int go;
    atomic_int stop;
    atomic_int failed;
};

struct worker {
    struct shared *shared;
    pthread_t thread;
    unsigned seed;
    uint64_t ops;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The bench's key names: bench.k000123 (13 bytes). */
static void key_name(char out[14], unsigned index) {
    snprintf(out, 14, "bench.k%06u", index % 1000000u);
}

static void fail(struct shared *s, const char *what, nkv_status st) {
    char detail[256];
    nkv_last_error(detail, sizeof detail);
    fprintf(stderr, "libnkv_bench: %s: %s (%s)\n", what, nkv_status_str((int)st), detail);
    atomic_store(&s->failed, 1);
    atomic_store(&s->stop, 1);
}

static void *run(void *arg) {
    struct worker *w = arg;
    struct shared *s = w->shared;
    unsigned char *value = malloc(s->value_size ? s->value_size : 1);
    if (!value) {
        atomic_store(&s->failed, 1);
        atomic_store(&s->stop, 1);
        return NULL;
    }
    memset(value, 'v', s->value_size);
    char key[14];
    while (!atomic_load_explicit(&s->go, memory_order_acquire)) {
        /* spin until every thread exists: all start together */
    }
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        w->seed = w->seed * 1103515245u + 12345u;
        key_name(key, (w->seed >> 8) % s->keys);
        if (s->put) {
            nkv_status st = nkv_put(s->client, key, 13, value, s->value_size, NULL);
            if (st != NKV_OK) {
                fail(s, "nkv_put", st);
                break;
            }
        } else {
            nkv_value *v = NULL;
            nkv_status st = nkv_get(s->client, key, 13, &v);
            if (st != NKV_OK) {
                fail(s, "nkv_get", st);
                break;
            }
            if (v->len != s->value_size) {
                fprintf(stderr, "libnkv_bench: nkv_get returned %zu bytes, %zu expected\n", v->len,
                        s->value_size);
                atomic_store(&s->failed, 1);
                atomic_store(&s->stop, 1);
                nkv_value_free(v);
                break;
            }
            nkv_value_free(v);
        }
        w->ops++;
    }
    free(value);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s ADDR THREADS SECONDS get|put KEYS VALUE_SIZE\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]);
    double seconds = atof(argv[3]);
    struct shared s = {0};
    s.put = strcmp(argv[4], "put") == 0;
    s.keys = (unsigned)strtoul(argv[5], NULL, 10);
    s.value_size = (size_t)strtoul(argv[6], NULL, 10);
    if (threads < 1 || seconds <= 0 || s.keys == 0) {
        fprintf(stderr, "libnkv_bench: bad arguments\n");
        return 2;
    }
    nkv_status st = nkv_connect(argv[1], &s.client);
    if (st != NKV_OK) {
        fail(&s, "nkv_connect", st);
        return 1;
    }
    struct worker *workers = calloc((size_t)threads, sizeof *workers);
    if (!workers) {
        return 1;
    }
    for (int i = 0; i < threads; i++) {
        workers[i].shared = &s;
        workers[i].seed = 0x5eedu + (unsigned)i * 7919u;
        if (pthread_create(&workers[i].thread, NULL, run, &workers[i]) != 0) {
            fprintf(stderr, "libnkv_bench: pthread_create failed\n");
            return 1;
        }
    }
    uint64_t start = now_ns();
    atomic_store_explicit(&s.go, 1, memory_order_release);
    struct timespec t;
    t.tv_sec = (time_t)seconds;
    t.tv_nsec = (long)((seconds - (double)t.tv_sec) * 1e9);
    while (nanosleep(&t, &t) != 0) {
    }
    atomic_store(&s.stop, 1);
    uint64_t ops = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        ops += workers[i].ops;
    }
    uint64_t elapsed = now_ns() - start;
    nkv_close(s.client);
    free(workers);
    if (atomic_load(&s.failed)) {
        return 1;
    }
    printf("ops=%llu elapsed_ns=%llu\n", (unsigned long long)ops, (unsigned long long)elapsed);
    return 0;
}
