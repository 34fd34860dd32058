/*
 * test_api.c: every function of the C API, its status codes, and the rule
 * that output pointers are written only on success.
 *
 * Needs NKV_ADDR (a live, empty server); uses NKV_SERVER_PID, when set, to
 * stop the server for a moment and see a request time out.
 */
#include "nkv_test.h"

#include <signal.h>
#include <sys/types.h>

/* A value no successful call would write, to see that failures leave it. */
#define SENTINEL UINT64_C(0xdeadbeefcafef00d)
#define PTR_SENTINEL ((void *)(uintptr_t)0x5eed)

static void test_version_and_status_strings(void) {
    const char *v = nkv_version();
    CHECK(v != NULL, "nkv_version() returned NULL");
    CHECK(strcmp(v, NKV_VERSION_STRING) == 0, "nkv_version() = \"%s\", header says \"%s\"", v,
          NKV_VERSION_STRING);
    char built[64];
    snprintf(built, sizeof built, "%d.%d.%d", NKV_VERSION_MAJOR, NKV_VERSION_MINOR,
             NKV_VERSION_PATCH);
    CHECK(strncmp(v, built, strlen(built)) == 0,
          "nkv_version() = \"%s\" does not start with the version macros \"%s\"", v, built);

    static const char *const names[] = {
        "NKV_OK",
        "NKV_ERR_NOT_FOUND",
        "NKV_ERR_CONDITION_FAILED",
        "NKV_ERR_INVALID_KEY",
        "NKV_ERR_TOO_LARGE",
        "NKV_ERR_INVALID_ARGUMENT",
        "NKV_ERR_CONNECTION",
        "NKV_ERR_TIMEOUT",
        "NKV_ERR_PROTOCOL",
        "NKV_ERR_UNAUTHORIZED",
        "NKV_ERR_SERVER",
        "NKV_ERR_CLOSED",
        "NKV_ERR_PANIC",
        "NKV_ERR_UNSUPPORTED",
        "NKV_ERR_LIMIT",
        "NKV_ERR_STORAGE",
        "NKV_ERR_UNSUPPORTED_VERSION",
    };
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
        const char *s = nkv_status_str((nkv_status)i);
        CHECK(s != NULL, "nkv_status_str(%d) returned NULL", i);
        CHECK(strcmp(s, names[i]) == 0, "nkv_status_str(%d) = \"%s\", expected \"%s\"", i, s,
              names[i]);
    }
    CHECK(NKV_ERR_UNSUPPORTED_VERSION == 16, "status numbering changed");
}

static void test_connect_errors(void) {
    nkv_client *c = (nkv_client *)PTR_SENTINEL;
    CHECK_STATUS(nkv_connect(test_addr(), NULL), NKV_ERR_INVALID_ARGUMENT);

    int64_t t0 = now_ms();
    CHECK_STATUS(nkv_connect("unix:/nonexistent-nkv-dir/nkv.sock", &c), NKV_ERR_CONNECTION);
    CHECK(c == (nkv_client *)PTR_SENTINEL, "failed nkv_connect wrote its output pointer");
    CHECK(now_ms() - t0 < 10000, "connecting to a missing socket took %lld ms",
          (long long)(now_ms() - t0));
    char msg[256];
    size_t n = nkv_last_error(msg, sizeof msg);
    CHECK(n > 0 && strlen(msg) > 0, "no nkv_last_error message after a failed connect");

    CHECK_STATUS(nkv_connect("bogus-address", &c), NKV_ERR_INVALID_ARGUMENT);
    CHECK(c == (nkv_client *)PTR_SENTINEL, "failed nkv_connect wrote its output pointer");

    /* NULL address: NKV_ADDR (set by the harness) is used. */
    nkv_client *from_env = NULL;
    CHECK_OK(nkv_connect(NULL, &from_env));
    CHECK(from_env != NULL, "nkv_connect(NULL) gave no client");
    CHECK_OK(nkv_ping(from_env));
    nkv_close(from_env);

    nkv_close(NULL); /* must be harmless */
}

static void test_null_arguments(nkv_client *c) {
    uint64_t rev = SENTINEL, count = SENTINEL, sub = SENTINEL;
    nkv_value *val = (nkv_value *)PTR_SENTINEL;
    nkv_entries *ents = (nkv_entries *)PTR_SENTINEL;

    CHECK_STATUS(nkv_put(NULL, "k", BYTES("v"), 1, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_put(c, NULL, BYTES("v"), 1, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_put(c, "k", NULL, 1, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_put_if(NULL, "k", BYTES("v"), 1, 0, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_put_if(c, NULL, BYTES("v"), 1, 0, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_get(NULL, "k", &val), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_get(c, NULL, &val), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_get(c, "k", NULL), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_list(NULL, "", &ents), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_list(c, NULL, &ents), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_list(c, "", NULL), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_delete(NULL, "k", &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_delete(c, NULL, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_delete_if(NULL, "k", 1, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_delete_if(c, NULL, 1, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_delete_prefix(NULL, "k", &rev, &count), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_delete_prefix(c, NULL, &rev, &count), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_subscribe(NULL, "k", recorder_cb, NULL, NULL, &sub),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_subscribe(c, NULL, recorder_cb, NULL, NULL, &sub),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_subscribe(c, "k", NULL, NULL, NULL, &sub), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_subscribe_since(NULL, "k", 1, recorder_cb, NULL, NULL, &sub),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_subscribe_since(c, "k", 1, NULL, NULL, NULL, &sub),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_unsubscribe(NULL, 1), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_set_timeout(NULL, 1000), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_ping(NULL), NKV_ERR_INVALID_ARGUMENT);

    CHECK(rev == SENTINEL && count == SENTINEL && sub == SENTINEL,
          "a call that failed wrote an output integer");
    CHECK(val == (nkv_value *)PTR_SENTINEL, "a failed nkv_get wrote its output");
    CHECK(ents == (nkv_entries *)PTR_SENTINEL, "a failed nkv_list wrote its output");

    nkv_value_free(NULL);
    nkv_entries_free(NULL);
}

static void test_last_error(nkv_client *c) {
    nkv_value *val = NULL;
    CHECK_STATUS(nkv_get(c, "no.such.key", &val), NKV_ERR_NOT_FOUND);
    size_t full = nkv_last_error(NULL, 0);
    CHECK(full > 0, "nkv_last_error(NULL, 0) = 0 after a failed call");

    char big[1024];
    memset(big, 'x', sizeof big);
    size_t n = nkv_last_error(big, sizeof big);
    CHECK(n == full, "nkv_last_error returned %zu, then %zu", full, n);
    CHECK(strlen(big) == full, "message length %zu, return value %zu", strlen(big), full);

    char small[4];
    memset(small, 'x', sizeof small);
    n = nkv_last_error(small, sizeof small);
    CHECK(n == full, "truncated nkv_last_error returned %zu, expected the full length %zu", n,
          full);
    CHECK(small[3] == '\0' && strlen(small) == 3 && strncmp(small, big, 3) == 0,
          "a 4-byte buffer should hold the first 3 bytes and a NUL");

    char one[1] = {'x'};
    n = nkv_last_error(one, 1);
    CHECK(n == full && one[0] == '\0', "a 1-byte buffer should get just the NUL");

    /* a different failure gives a different message */
    char before[1024];
    nkv_last_error(before, sizeof before);
    CHECK_STATUS(nkv_put(c, "bad..key", BYTES("v"), 1, NULL), NKV_ERR_INVALID_KEY);
    char other[1024];
    nkv_last_error(other, sizeof other);
    CHECK(strcmp(other, before) != 0, "INVALID_KEY and NOT_FOUND gave the same message \"%s\"",
          other);
}

struct thread_err {
    nkv_client *c;
    char msg[1024];
};

static void *failing_thread(void *arg) {
    struct thread_err *t = (struct thread_err *)arg;
    nkv_value *val = NULL;
    nkv_status s = nkv_get(t->c, "thread.missing", &val);
    if (s != NKV_ERR_NOT_FOUND) {
        snprintf(t->msg, sizeof t->msg, "!unexpected %s", nkv_status_str(s));
        return NULL;
    }
    nkv_last_error(t->msg, sizeof t->msg);
    return NULL;
}

static void test_last_error_is_per_thread(nkv_client *c) {
    CHECK_STATUS(nkv_put(c, "bad..key", BYTES("v"), 1, NULL), NKV_ERR_INVALID_KEY);
    char mine[1024];
    nkv_last_error(mine, sizeof mine);

    struct thread_err t;
    memset(&t, 0, sizeof t);
    t.c = c;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, failing_thread, &t) == 0, "pthread_create");
    pthread_join(th, NULL);
    CHECK(t.msg[0] != '!' && t.msg[0] != '\0', "other thread: %s", t.msg);

    char after[1024];
    nkv_last_error(after, sizeof after);
    CHECK(strcmp(mine, after) == 0,
          "another thread's failure changed this thread's last error: \"%s\" -> \"%s\"", mine,
          after);
}

static void test_put_get(nkv_client *c) {
    uint64_t r1 = 0, r2 = 0;
    put_str(c, "a.b", "one", &r1);
    CHECK(r1 > 0, "first revision is %llu", (unsigned long long)r1);
    put_str(c, "a.b", "two", &r2);
    CHECK(r2 > r1, "revision went from %llu to %llu", (unsigned long long)r1,
          (unsigned long long)r2);
    CHECK_OK(nkv_put(c, "a.nullrev", BYTES("x"), 1, NULL)); /* out may be NULL */

    nkv_value *v = NULL;
    CHECK_OK(nkv_get(c, "a.b", &v));
    CHECK(v != NULL, "nkv_get gave no value");
    CHECK(v->len == 3 && memcmp(v->data, "two", 3) == 0, "got %zu bytes, expected \"two\"",
          v->len);
    CHECK(v->revision == r2, "get revision %llu, put said %llu",
          (unsigned long long)v->revision, (unsigned long long)r2);
    nkv_value_free(v);

    /* binary values with NUL bytes round-trip exactly */
    uint8_t bin[256];
    for (int i = 0; i < 256; i++) {
        bin[i] = (uint8_t)(255 - i);
    }
    bin[10] = 0;
    CHECK_OK(nkv_put(c, "a.bin", bin, sizeof bin, NULL));
    CHECK_OK(nkv_get(c, "a.bin", &v));
    CHECK(v->len == sizeof bin && memcmp(v->data, bin, sizeof bin) == 0,
          "binary value did not round-trip");
    nkv_value_free(v);

    /* an empty value, given as NULL + 0 */
    uint64_t re = 0;
    CHECK_OK(nkv_put(c, "a.empty", NULL, 0, &re));
    CHECK_OK(nkv_get(c, "a.empty", &v));
    CHECK(v->len == 0 && v->revision == re, "empty value: len %zu rev %llu", v->len,
          (unsigned long long)v->revision);
    nkv_value_free(v);

    /* a large value (512 KiB) */
    size_t big_len = 512 * 1024;
    uint8_t *big = (uint8_t *)malloc(big_len);
    for (size_t i = 0; i < big_len; i++) {
        big[i] = (uint8_t)(i * 7);
    }
    CHECK_OK(nkv_put(c, "a.big", big, big_len, NULL));
    CHECK_OK(nkv_get(c, "a.big", &v));
    CHECK(v->len == big_len && memcmp(v->data, big, big_len) == 0,
          "512 KiB value did not round-trip");
    nkv_value_free(v);
    free(big);

    /* missing key: NOT_FOUND, output untouched */
    nkv_value *untouched = (nkv_value *)PTR_SENTINEL;
    CHECK_STATUS(nkv_get(c, "a.missing", &untouched), NKV_ERR_NOT_FOUND);
    CHECK(untouched == (nkv_value *)PTR_SENTINEL, "failed nkv_get wrote *out");

    /* invalid keys */
    uint64_t rev = SENTINEL;
    const char *bad[] = {"", ".a", "a.", "a..b", "a b", "net.*", "tab\tkey"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nkv_status s = nkv_put(c, bad[i], BYTES("v"), 1, &rev);
        CHECK(s == NKV_ERR_INVALID_KEY, "nkv_put(\"%s\") returned %s, expected INVALID_KEY",
              bad[i], nkv_status_str(s));
        s = nkv_get(c, bad[i], &untouched);
        CHECK(s == NKV_ERR_INVALID_KEY, "nkv_get(\"%s\") returned %s, expected INVALID_KEY",
              bad[i], nkv_status_str(s));
    }
    const char invalid_utf8[] = {'a', '.', (char)0xff, (char)0xfe, 0};
    /* nkv.h: bad UTF-8 in an argument is NKV_ERR_INVALID_ARGUMENT (the wire
     * would say INVALID_KEY, but such a key never reaches the wire) */
    CHECK_STATUS(nkv_put(c, invalid_utf8, BYTES("v"), 1, &rev), NKV_ERR_INVALID_ARGUMENT);

    /* too long a key (1099 bytes, limit 1024), too large a value (1 MiB + 1) */
    char long_key[1100];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = 0;
    /* NB: protocol.md section 6 says TOO_LARGE for a key over max_key, but the
     * server and the client both answer INVALID_KEY (tests/server_abuse.rs,
     * tests/client_fake_server.rs); this follows the implementation. */
    CHECK_STATUS(nkv_put(c, long_key, BYTES("v"), 1, &rev), NKV_ERR_INVALID_KEY);
    size_t huge_len = 1024 * 1024 + 1;
    uint8_t *huge = (uint8_t *)calloc(1, huge_len);
    CHECK_STATUS(nkv_put(c, "a.huge", huge, huge_len, &rev), NKV_ERR_TOO_LARGE);
    free(huge);
    CHECK(rev == SENTINEL, "a failed nkv_put wrote *out_revision");

    /* the connection survived all of that */
    CHECK_OK(nkv_ping(c));
}

static void test_put_if(nkv_client *c) {
    uint64_t r1 = 0, r2 = 0, rev = SENTINEL;
    CHECK_OK(nkv_put_if(c, "cond.k", BYTES("first"), 5, 0, &r1));
    CHECK(r1 > 0, "put_if revision %llu", (unsigned long long)r1);
    CHECK_STATUS(nkv_put_if(c, "cond.k", BYTES("again"), 5, 0, &rev), NKV_ERR_CONDITION_FAILED);
    CHECK(rev == SENTINEL, "failed put_if wrote *out_revision");
    CHECK_STATUS(nkv_put_if(c, "cond.k", BYTES("stale"), 5, r1 + 1000, &rev),
                 NKV_ERR_CONDITION_FAILED);
    CHECK_OK(nkv_put_if(c, "cond.k", BYTES("second"), 6, r1, &r2));
    CHECK(r2 > r1, "revision did not grow");
    CHECK_STATUS(nkv_put_if(c, "cond.k", BYTES("stale"), 5, r1, &rev), NKV_ERR_CONDITION_FAILED);
    CHECK_STATUS(nkv_put_if(c, "cond.absent", BYTES("x"), 1, 5, &rev),
                 NKV_ERR_CONDITION_FAILED);

    nkv_value *v = NULL;
    CHECK_OK(nkv_get(c, "cond.k", &v));
    CHECK(v->len == 6 && memcmp(v->data, "second", 6) == 0 && v->revision == r2,
          "conditional puts that failed changed the value");
    nkv_value_free(v);
    CHECK_STATUS(nkv_get(c, "cond.absent", &v), NKV_ERR_NOT_FOUND);
}

static void test_list(nkv_client *c) {
    uint64_t ra = 0, rb = 0, rax = 0;
    put_str(c, "l.b", "B", &rb);
    put_str(c, "l.a", "A", &ra);
    put_str(c, "l.a.x", "AX", &rax);
    put_str(c, "lx", "not under l", NULL);
    put_str(c, "l", "the prefix itself", NULL);

    nkv_entries *e = NULL;
    CHECK_OK(nkv_list(c, "l", &e));
    CHECK(e != NULL, "nkv_list gave nothing");
    CHECK(e->count == 4, "list(\"l\") has %zu entries, expected 4 (l, l.a, l.a.x, l.b)",
          e->count);
    const char *keys[] = {"l", "l.a", "l.a.x", "l.b"};
    const char *vals[] = {"the prefix itself", "A", "AX", "B"};
    for (size_t i = 0; i < 4; i++) {
        const nkv_entry *it = &e->items[i];
        CHECK(strcmp(it->key, keys[i]) == 0, "entry %zu is \"%s\", expected \"%s\"", i, it->key,
              keys[i]);
        CHECK(it->len == strlen(vals[i]) && memcmp(it->data, vals[i], it->len) == 0,
              "entry %s has the wrong value", keys[i]);
    }
    CHECK(e->items[1].revision == ra && e->items[2].revision == rax &&
              e->items[3].revision == rb,
          "list revisions differ from put revisions");
    nkv_entries_free(e);

    CHECK_OK(nkv_list(c, "", &e));
    bool saw_lx = false;
    for (size_t i = 0; i < e->count; i++) {
        if (i > 0) {
            CHECK(strcmp(e->items[i - 1].key, e->items[i].key) < 0,
                  "list(\"\") not sorted: \"%s\" before \"%s\"", e->items[i - 1].key,
                  e->items[i].key);
        }
        saw_lx |= strcmp(e->items[i].key, "lx") == 0;
    }
    CHECK(e->count >= 5 && saw_lx, "list(\"\") misses keys (%zu entries)", e->count);
    nkv_entries_free(e);

    CHECK_OK(nkv_list(c, "nothing.here", &e));
    CHECK(e != NULL && e->count == 0, "empty listing has %zu entries", e ? e->count : 0);
    nkv_entries_free(e);

    nkv_entries *untouched = (nkv_entries *)PTR_SENTINEL;
    CHECK_STATUS(nkv_list(c, "bad..prefix", &untouched), NKV_ERR_INVALID_KEY);
    CHECK(untouched == (nkv_entries *)PTR_SENTINEL, "failed nkv_list wrote *out");
}

static void test_delete(nkv_client *c) {
    uint64_t rput = 0, rdel = 0, rev = SENTINEL;
    put_str(c, "del.k", "v", &rput);
    CHECK_OK(nkv_delete(c, "del.k", &rdel));
    CHECK(rdel > rput, "delete revision %llu not above put revision %llu",
          (unsigned long long)rdel, (unsigned long long)rput);
    nkv_value *v = NULL;
    CHECK_STATUS(nkv_get(c, "del.k", &v), NKV_ERR_NOT_FOUND);
    CHECK_STATUS(nkv_delete(c, "del.k", &rev), NKV_ERR_NOT_FOUND);
    CHECK(rev == SENTINEL, "failed nkv_delete wrote *out_revision");
    put_str(c, "del.k2", "v", NULL);
    CHECK_OK(nkv_delete(c, "del.k2", NULL));
    CHECK_STATUS(nkv_delete(c, "bad..key", &rev), NKV_ERR_INVALID_KEY);

    /* conditional delete */
    uint64_t r1 = 0;
    put_str(c, "del.c", "v", &r1);
    CHECK_STATUS(nkv_delete_if(c, "del.c", r1 + 1000, &rev), NKV_ERR_CONDITION_FAILED);
    CHECK_STATUS(nkv_delete_if(c, "del.c", 0, &rev), NKV_ERR_INVALID_ARGUMENT); /* 0 is refused */
    CHECK(rev == SENTINEL, "failed nkv_delete_if wrote *out_revision");
    CHECK_OK(nkv_get(c, "del.c", &v));
    nkv_value_free(v);
    CHECK_OK(nkv_delete_if(c, "del.c", r1, &rdel));
    CHECK(rdel > r1, "delete_if revision did not grow");
    CHECK_STATUS(nkv_get(c, "del.c", &v), NKV_ERR_NOT_FOUND);

    /* prefix delete: d, d.a, d.b, d.b.c go; dd and e stay */
    put_str(c, "d", "0", NULL);
    put_str(c, "d.a", "1", NULL);
    put_str(c, "d.b", "2", NULL);
    put_str(c, "d.b.c", "3", NULL);
    uint64_t rkeep = 0;
    put_str(c, "dd", "keep", &rkeep);
    uint64_t rp = SENTINEL, count = SENTINEL;
    CHECK_OK(nkv_delete_prefix(c, "d", &rp, &count));
    CHECK(count == 4, "delete_prefix(\"d\") deleted %llu keys, expected 4",
          (unsigned long long)count);
    CHECK(rp > rkeep, "delete_prefix revision %llu not above %llu", (unsigned long long)rp,
          (unsigned long long)rkeep);
    nkv_entries *e = NULL;
    CHECK_OK(nkv_list(c, "d", &e));
    CHECK(e->count == 0, "%zu keys under d survived the prefix delete", e->count);
    nkv_entries_free(e);
    CHECK_OK(nkv_get(c, "dd", &v));
    CHECK(v->len == 4 && memcmp(v->data, "keep", 4) == 0, "dd was deleted with prefix d");
    nkv_value_free(v);

    count = SENTINEL;
    CHECK_OK(nkv_delete_prefix(c, "d", NULL, &count));
    CHECK(count == 0, "second delete_prefix deleted %llu keys", (unsigned long long)count);
    CHECK_OK(nkv_delete_prefix(c, "nothing", NULL, NULL));
    rp = SENTINEL;
    count = SENTINEL;
    CHECK_STATUS(nkv_delete_prefix(c, "bad..p", &rp, &count), NKV_ERR_INVALID_KEY);
    CHECK(rp == SENTINEL && count == SENTINEL, "failed delete_prefix wrote its outputs");
}

static void test_subscribe_basics(nkv_client *c) {
    uint64_t sub = SENTINEL;

    /* a failed subscribe writes nothing, never calls back, and has already
     * called free_user_data (once) when it returns */
    recorder failed;
    recorder_init(&failed);
    CHECK_STATUS(nkv_subscribe(c, "bad..key", recorder_cb, &failed, recorder_free, &sub),
                 NKV_ERR_INVALID_KEY);
    CHECK(sub == SENTINEL, "failed nkv_subscribe wrote *out_subscription");
    CHECK(recorder_count(&failed) == 0, "failed subscribe called the callback");
    CHECK(recorder_freed(&failed) == 1, "free_user_data called %d times for a failed subscribe",
          recorder_freed(&failed));
    CHECK_STATUS(nkv_subscribe_since(c, "bad..key", 1, recorder_cb, &failed, recorder_free, &sub),
                 NKV_ERR_INVALID_KEY);
    CHECK(sub == SENTINEL && recorder_freed(&failed) == 2,
          "failed nkv_subscribe_since: output written or free_user_data not called");
    recorder_destroy(&failed);

    recorder r;
    recorder_init(&r);
    put_str(c, "sb.x", "1", NULL);
    CHECK_OK(nkv_subscribe(c, "sb", recorder_cb, &r, recorder_free, &sub));
    CHECK(sub != SENTINEL, "nkv_subscribe wrote no subscription id");
    CHECK(recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 1,
          "expected UPDATE sb.x then SYNCED");
    CHECK_OK(nkv_unsubscribe(c, sub));
    CHECK(recorder_freed(&r) == 1, "free_user_data not called exactly once by nkv_unsubscribe (%d)",
          recorder_freed(&r));

    CHECK_STATUS(nkv_unsubscribe(c, sub), NKV_ERR_NOT_FOUND);
    CHECK_STATUS(nkv_unsubscribe(c, 987654321), NKV_ERR_NOT_FOUND);
    CHECK(recorder_freed(&r) == 1, "free_user_data called again");
    recorder_check_invariants(&r, "subscribe basics");
    recorder_destroy(&r);

    /* a NULL free_user_data and a NULL out_subscription are allowed */
    recorder q;
    recorder_init(&q);
    uint64_t sub2 = 0;
    CHECK_OK(nkv_subscribe(c, "sb", recorder_cb, &q, NULL, &sub2));
    CHECK(recorder_wait_for(&q, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 1, "no SYNCED");
    CHECK_OK(nkv_unsubscribe(c, sub2));
    recorder_destroy(&q);
    /* with no id the subscription lasts until nkv_close (a static recorder) */
    static recorder forever;
    recorder_init(&forever);
    CHECK_OK(nkv_subscribe(c, "sb.none", recorder_cb, &forever, NULL, NULL));
    CHECK(recorder_wait_for(&forever, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 0, "no SYNCED");
}

/* kill() returns before the target stops: wait until /proc says it has. */
static void wait_stopped(pid_t pid) {
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

static void test_ping_and_timeout(nkv_client *c) {
    CHECK_OK(nkv_ping(c));
    CHECK_OK(nkv_set_timeout(c, 5000));
    CHECK_STATUS(nkv_set_timeout(c, 0), NKV_ERR_INVALID_ARGUMENT);
    CHECK_OK(nkv_ping(c));

    const char *pid_s = getenv("NKV_SERVER_PID");
    if (pid_s == NULL) {
        printf("note: NKV_SERVER_PID not set; request timeout not exercised\n");
        return;
    }
    pid_t pid = (pid_t)atol(pid_s);
    CHECK_OK(nkv_set_timeout(c, 300));
    CHECK(kill(pid, SIGSTOP) == 0, "SIGSTOP to the server (pid %ld)", (long)pid);
    wait_stopped(pid);
    int64_t t0 = now_ms();
    nkv_status s = nkv_ping(c);
    int64_t took = now_ms() - t0;
    uint64_t rev = SENTINEL;
    nkv_status s2 = nkv_put(c, "timeout.k", BYTES("v"), 1, &rev);
    kill(pid, SIGCONT);
    CHECK(s == NKV_ERR_TIMEOUT, "ping to a stopped server returned %s, expected NKV_ERR_TIMEOUT",
          nkv_status_str(s));
    CHECK(took >= 250 && took < 5000, "a 300 ms timeout took %lld ms", (long long)took);
    CHECK(s2 == NKV_ERR_TIMEOUT, "put to a stopped server returned %s", nkv_status_str(s2));
    CHECK(rev == SENTINEL, "a timed-out put wrote *out_revision");

    /* once the server runs again the client works again */
    CHECK_OK(nkv_set_timeout(c, 10000));
    int64_t deadline = now_ms() + WAIT_MS;
    while (nkv_ping(c) != NKV_OK) {
        CHECK(now_ms() < deadline, "client never recovered after a timeout");
        sleep_ms(50);
    }
    put_str(c, "timeout.after", "ok", NULL);
    nkv_value *v = NULL;
    CHECK_OK(nkv_get(c, "timeout.after", &v));
    CHECK(v->len == 2 && memcmp(v->data, "ok", 2) == 0, "wrong value after a timeout");
    nkv_value_free(v);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    test_version_and_status_strings();
    test_connect_errors();
    nkv_client *c = test_connect();
    test_null_arguments(c);
    test_last_error(c);
    test_last_error_is_per_thread(c);
    test_put_get(c);
    test_put_if(c);
    test_list(c);
    test_delete(c);
    test_subscribe_basics(c);
    test_ping_and_timeout(c);
    nkv_close(c);
    printf("test_api: OK\n");
    return 0;
}
