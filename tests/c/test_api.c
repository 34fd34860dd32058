/*
 * test_api.c: every function of the C API, its status codes, and the rule
 * that output pointers are written only on success.
 *
 * Needs NKV_ADDR (a live, empty server) and, from tests/c_api.rs, the
 * server's limits in NKV_TEST_MAX_KEY and NKV_TEST_MAX_VALUE (it starts the
 * server with them); uses NKV_SERVER_PID, when set, to stop the server for a
 * moment and see requests time out.
 */
#include "nkv_test.h"

#include <limits.h>

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
        const char *s = nkv_status_str(i);
        CHECK(s != NULL, "nkv_status_str(%d) returned NULL", i);
        CHECK(strcmp(s, names[i]) == 0, "nkv_status_str(%d) = \"%s\", expected \"%s\"", i, s,
              names[i]);
    }
    CHECK(NKV_ERR_UNSUPPORTED_VERSION == 16, "status numbering changed");

    /* Any other integer (a status from a newer library, a stray value) has
     * one fixed name; the old function indexed a table with it. */
    const int unknown[] = {17, 99, -1, 1000, INT_MAX, INT_MIN};
    const char *first = nkv_status_str(unknown[0]);
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = nkv_status_str(unknown[i]);
        CHECK(s != NULL && strcmp(s, "NKV_ERR_UNKNOWN") == 0,
              "nkv_status_str(%d) = \"%s\", expected \"NKV_ERR_UNKNOWN\"", unknown[i],
              s ? s : "(null)");
        CHECK(s == first, "nkv_status_str(%d) is not the one static string", unknown[i]);
    }

    static const char *const states[] = {"NKV_STATE_CONNECTED", "NKV_STATE_DISCONNECTED",
                                         "NKV_STATE_CONNECTING", "NKV_STATE_CLOSED"};
    for (int i = 0; i < 4; i++) {
        CHECK(strcmp(nkv_state_str(i), states[i]) == 0, "nkv_state_str(%d) = \"%s\"", i,
              nkv_state_str(i));
    }
    CHECK(NKV_STATE_CONNECTED == 0 && NKV_STATE_CLOSED == 3, "state numbering changed");
    CHECK(strcmp(nkv_state_str(4), "NKV_STATE_UNKNOWN") == 0 &&
              strcmp(nkv_state_str(-1), "NKV_STATE_UNKNOWN") == 0,
          "nkv_state_str of an unknown state");

    CHECK(nkv_abi_version() == NKV_ABI_VERSION, "nkv_abi_version() = %u, the header says %d",
          (unsigned)nkv_abi_version(), NKV_ABI_VERSION);
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

/* A program built against another ABI is refused, not misbehaving. */
static void test_abi_mismatch(void) {
    nkv_client *c = (nkv_client *)PTR_SENTINEL;
    CHECK_STATUS(nkv_connect_abi(NKV_ABI_VERSION + 1, test_addr(), NULL, &c),
                 NKV_ERR_UNSUPPORTED_VERSION);
    CHECK(c == (nkv_client *)PTR_SENTINEL, "a refused nkv_connect_abi wrote its output");
    char msg[512];
    CHECK(nkv_last_error(msg, sizeof msg) > 0 && strstr(msg, "ABI") != NULL,
          "no message naming the ABI after NKV_ERR_UNSUPPORTED_VERSION: \"%s\"", msg);
    CHECK_STATUS(nkv_connect_abi(UINT32_MAX, test_addr(), NULL, &c), NKV_ERR_UNSUPPORTED_VERSION);
    CHECK(nkv_options_new_abi(NKV_ABI_VERSION + 1) == NULL,
          "nkv_options_new_abi(another ABI) gave options");
    CHECK(nkv_last_error(msg, sizeof msg) > 0, "no message after nkv_options_new_abi failed");
    /* the macros pass this header's version */
    CHECK_OK(nkv_connect_abi(NKV_ABI_VERSION, test_addr(), NULL, &c));
    CHECK_OK(nkv_ping(c));
    nkv_close(c);
}

/* nkv_options: every setter, its refusals, and a client connected with them. */
static void test_options(void) {
    CHECK_STATUS(nkv_options_set_name(NULL, "x"), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_connect_timeout(NULL, 1000), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_request_timeout(NULL, 1000), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_reconnect(NULL, 1, 10, 100), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_keepalive(NULL, 1000), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_dispatch(NULL, NKV_DISPATCH_THREAD), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_queue_limit(NULL, 10), NKV_ERR_INVALID_ARGUMENT);
    nkv_options_free(NULL);

    nkv_options *o = nkv_options_new();
    CHECK(o != NULL, "nkv_options_new() returned NULL");
    CHECK_STATUS(nkv_options_set_name(o, NULL), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_connect_timeout(o, 0), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_request_timeout(o, 0), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_reconnect(o, 1, 0, 100), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_reconnect(o, 1, 200, 100), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_dispatch(o, 2), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_dispatch(o, -1), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_options_set_queue_limit(o, 0), NKV_ERR_INVALID_ARGUMENT);

    CHECK_OK(nkv_options_set_name(o, "test_api options"));
    CHECK_OK(nkv_options_set_connect_timeout(o, 3000));
    CHECK_OK(nkv_options_set_request_timeout(o, 4000));
    CHECK_OK(nkv_options_set_reconnect(o, 0, 10, 10));
    CHECK_OK(nkv_options_set_keepalive(o, 0)); /* 0: off */
    CHECK_OK(nkv_options_set_keepalive(o, 5000));
    CHECK_OK(nkv_options_set_dispatch(o, NKV_DISPATCH_THREAD));
    CHECK_OK(nkv_options_set_queue_limit(o, 1));

    nkv_client *c = NULL;
    CHECK_OK(nkv_connect_opts(test_addr(), o, &c));
    /* the options belong to the caller: freeing them leaves the client alone */
    nkv_options_free(o);
    CHECK_OK(nkv_ping(c));
    CHECK(nkv_state(c) == NKV_STATE_CONNECTED, "state %s after connecting",
          nkv_state_str(nkv_state(c)));
    CHECK(nkv_fd(c) == -1, "nkv_fd in thread dispatch mode is %d, expected -1", nkv_fd(c));
    size_t ran = 99;
    CHECK_OK(nkv_dispatch(c, 0, &ran));
    CHECK(ran == 0, "nkv_dispatch in thread mode ran %zu callbacks", ran);
    nkv_close(c);

    /* NULL options: the defaults */
    CHECK_OK(nkv_connect_opts(test_addr(), NULL, &c));
    CHECK_OK(nkv_ping(c));
    nkv_close(c);
}

static void test_null_arguments(nkv_client *c) {
    uint64_t rev = SENTINEL, count = SENTINEL, sub = SENTINEL;
    nkv_value *val = (nkv_value *)PTR_SENTINEL;
    nkv_entries *ents = (nkv_entries *)PTR_SENTINEL;

    CHECK_STATUS(nkv_put(NULL, "k", NKV_NUL, BYTES("v"), 1, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_put(c, NULL, NKV_NUL, BYTES("v"), 1, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_put(c, "k", NKV_NUL, NULL, 1, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_put_if(NULL, "k", NKV_NUL, BYTES("v"), 1, 0, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_put_if(c, NULL, NKV_NUL, BYTES("v"), 1, 0, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_get(NULL, "k", NKV_NUL, &val), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_get(c, NULL, NKV_NUL, &val), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_get(c, "k", NKV_NUL, NULL), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_list(NULL, "", NKV_NUL, &ents), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_list(c, NULL, NKV_NUL, &ents), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_list(c, "", NKV_NUL, NULL), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_delete(NULL, "k", NKV_NUL, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_delete(c, NULL, NKV_NUL, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_delete_if(NULL, "k", NKV_NUL, 1, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_delete_if(c, NULL, NKV_NUL, 1, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_delete_prefix(NULL, "k", NKV_NUL, &rev, &count), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_delete_prefix(c, NULL, NKV_NUL, &rev, &count), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_subscribe(NULL, "k", NKV_NUL, recorder_cb, NULL, NULL, &sub),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_subscribe(c, NULL, NKV_NUL, recorder_cb, NULL, NULL, &sub),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_subscribe(c, "k", NKV_NUL, NULL, NULL, NULL, &sub), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_subscribe_since(NULL, "k", NKV_NUL, 1, recorder_cb, NULL, NULL, &sub),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_subscribe_since(c, "k", NKV_NUL, 1, NULL, NULL, NULL, &sub),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_unsubscribe(NULL, 1), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_set_timeout(NULL, 1000), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_ping(NULL), NKV_ERR_INVALID_ARGUMENT);
    nkv_stats_list *stats = (nkv_stats_list *)PTR_SENTINEL;
    CHECK_STATUS(nkv_stats(NULL, &stats), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_stats(c, NULL), NKV_ERR_INVALID_ARGUMENT);
    CHECK(stats == (nkv_stats_list *)PTR_SENTINEL, "a failed nkv_stats wrote its output");
    uint32_t limit = 7;
    CHECK_STATUS(nkv_server_limits(NULL, &limit, &limit, &limit), NKV_ERR_INVALID_ARGUMENT);
    CHECK(limit == 7, "a failed nkv_server_limits wrote its output");
    CHECK_STATUS(nkv_compact(NULL, &rev, &count), NKV_ERR_INVALID_ARGUMENT);
    size_t ran = 5;
    CHECK_STATUS(nkv_dispatch(NULL, 0, &ran), NKV_ERR_INVALID_ARGUMENT);
    CHECK(ran == 5, "a failed nkv_dispatch wrote its output");
    CHECK(nkv_state(NULL) == NKV_STATE_CLOSED, "nkv_state(NULL) is not CLOSED");
    CHECK(nkv_fd(NULL) == -1, "nkv_fd(NULL) is not -1");

    CHECK(rev == SENTINEL && count == SENTINEL && sub == SENTINEL,
          "a call that failed wrote an output integer");
    CHECK(val == (nkv_value *)PTR_SENTINEL, "a failed nkv_get wrote its output");
    CHECK(ents == (nkv_entries *)PTR_SENTINEL, "a failed nkv_list wrote its output");

    nkv_value_free(NULL);
    nkv_entries_free(NULL);
    nkv_stats_free(NULL);
}

/* free_user_data of a subscription that could not be made. */
static int refused_frees;
static void count_refused_free(void *user_data) {
    CHECK(user_data == (void *)&refused_frees, "free_user_data got another pointer");
    refused_frees++;
}

/* Keys and prefixes are passed with their length: an embedded NUL is an
 * invalid key (never cut short), an impossible length is refused before a
 * byte is read, and an explicit length takes exactly that many bytes. */
static void test_key_lengths(nkv_client *c) {
    static const char nul_key[] = "kl.a\0b"; /* 6 bytes with an embedded NUL */
    const size_t nul_len = sizeof nul_key - 1;
    uint64_t rev = SENTINEL, count = SENTINEL, sub = SENTINEL;
    nkv_value *val = (nkv_value *)PTR_SENTINEL;
    nkv_entries *ents = (nkv_entries *)PTR_SENTINEL;

    CHECK_STATUS(nkv_put(c, nul_key, nul_len, BYTES("v"), 1, &rev), NKV_ERR_INVALID_KEY);
    CHECK_STATUS(nkv_put_if(c, nul_key, nul_len, BYTES("v"), 1, 0, &rev), NKV_ERR_INVALID_KEY);
    CHECK_STATUS(nkv_get(c, nul_key, nul_len, &val), NKV_ERR_INVALID_KEY);
    CHECK_STATUS(nkv_delete(c, nul_key, nul_len, &rev), NKV_ERR_INVALID_KEY);
    CHECK_STATUS(nkv_delete_if(c, nul_key, nul_len, 1, &rev), NKV_ERR_INVALID_KEY);
    CHECK_STATUS(nkv_delete_prefix(c, nul_key, nul_len, &rev, &count), NKV_ERR_INVALID_KEY);
    CHECK_STATUS(nkv_list(c, nul_key, nul_len, &ents), NKV_ERR_INVALID_KEY);
    refused_frees = 0;
    CHECK_STATUS(nkv_subscribe(c, nul_key, nul_len, recorder_cb, &refused_frees,
                               count_refused_free, &sub),
                 NKV_ERR_INVALID_KEY);
    CHECK(refused_frees == 1, "a refused subscribe called free_user_data %d times",
          refused_frees);
    CHECK(rev == SENTINEL && count == SENTINEL && sub == SENTINEL && val == PTR_SENTINEL &&
              ents == PTR_SENTINEL,
          "a call refused for an embedded NUL wrote an output");
    /* nothing was written under the part before the NUL */
    CHECK_STATUS(nkv_get(c, "kl.a", NKV_NUL, &val), NKV_ERR_NOT_FOUND);
    nkv_entries *e = NULL;
    CHECK_OK(nkv_list(c, "kl", NKV_NUL, &e));
    CHECK(nkv_entries_count(e) == 0, "%zu keys under kl after refused writes",
          nkv_entries_count(e));
    nkv_entries_free(e);

    /* a length beyond SIZE_MAX / 2 cannot describe memory: refused unread
     * (the buffers here are tiny: valgrind would see a read) */
    const size_t huge[] = {SIZE_MAX / 2 + 1, SIZE_MAX - 1};
    for (size_t i = 0; i < 2; i++) {
        size_t n = huge[i];
        CHECK_STATUS(nkv_put(c, "kl.b", n, BYTES("v"), 1, &rev), NKV_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(nkv_put(c, "kl.b", NKV_NUL, BYTES("v"), n, &rev), NKV_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(nkv_put_if(c, "kl.b", n, BYTES("v"), 1, 0, &rev), NKV_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(nkv_get(c, "kl.b", n, &val), NKV_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(nkv_delete(c, "kl.b", n, &rev), NKV_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(nkv_delete_if(c, "kl.b", n, 1, &rev), NKV_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(nkv_delete_prefix(c, "kl", n, &rev, &count), NKV_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(nkv_list(c, "kl", n, &ents), NKV_ERR_INVALID_ARGUMENT);
        refused_frees = 0;
        CHECK_STATUS(nkv_subscribe(c, "kl", n, recorder_cb, &refused_frees, count_refused_free,
                                   &sub),
                     NKV_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(nkv_subscribe_since(c, "kl", n, 1, recorder_cb, &refused_frees,
                                         count_refused_free, &sub),
                     NKV_ERR_INVALID_ARGUMENT);
        CHECK(refused_frees == 2, "refused subscribes called free_user_data %d times",
              refused_frees);
    }
    CHECK(rev == SENTINEL && count == SENTINEL && sub == SENTINEL && val == PTR_SENTINEL &&
              ents == PTR_SENTINEL,
          "a call refused for its length wrote an output");

    /* an explicit length takes that many bytes, NUL or not after them */
    uint64_t r = 0;
    CHECK_OK(nkv_put(c, "kl.c.rest-is-ignored", 4, BYTES("four"), 4, &r));
    CHECK_OK(nkv_get(c, "kl.c", NKV_NUL, &val));
    CHECK(val->len == 4 && memcmp(val->data, "four", 4) == 0 && val->revision == r,
          "the 4-byte key kl.c does not hold what was put");
    nkv_value_free(val);
    CHECK_STATUS(nkv_get(c, "kl.c.rest-is-ignored", NKV_NUL, &val), NKV_ERR_NOT_FOUND);
    const char no_nul[4] = {'k', 'l', '.', 'd'}; /* not NUL-terminated at all */
    CHECK_OK(nkv_put(c, no_nul, sizeof no_nul, BYTES("d"), 1, NULL));
    CHECK_OK(nkv_get(c, no_nul, sizeof no_nul, &val));
    nkv_value_free(val);
    CHECK_OK(nkv_delete(c, no_nul, sizeof no_nul, NULL));
    CHECK_STATUS(nkv_put(c, "kl.e", 0, BYTES("v"), 1, &rev), NKV_ERR_INVALID_KEY); /* "" */
    /* a prefix of length 0 is "": every key */
    CHECK_OK(nkv_list(c, "ignored", 0, &e));
    CHECK(nkv_entries_count(e) >= 1, "list of the empty prefix found nothing");
    nkv_entries_free(e);
    CHECK_OK(nkv_delete(c, "kl.c", NKV_NUL, NULL));
}

static void test_last_error(nkv_client *c) {
    nkv_value *val = NULL;
    CHECK_STATUS(nkv_get(c, "no.such.key", NKV_NUL, &val), NKV_ERR_NOT_FOUND);
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
    CHECK_STATUS(nkv_put(c, "bad..key", NKV_NUL, BYTES("v"), 1, NULL), NKV_ERR_INVALID_KEY);
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
    nkv_status s = nkv_get(t->c, "thread.missing", NKV_NUL, &val);
    if (s != NKV_ERR_NOT_FOUND) {
        snprintf(t->msg, sizeof t->msg, "!unexpected %s", nkv_status_str(s));
        return NULL;
    }
    nkv_last_error(t->msg, sizeof t->msg);
    return NULL;
}

static void test_last_error_is_per_thread(nkv_client *c) {
    CHECK_STATUS(nkv_put(c, "bad..key", NKV_NUL, BYTES("v"), 1, NULL), NKV_ERR_INVALID_KEY);
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
    CHECK_OK(nkv_put(c, "a.nullrev", NKV_NUL, BYTES("x"), 1, NULL)); /* out may be NULL */

    nkv_value *v = NULL;
    CHECK_OK(nkv_get(c, "a.b", NKV_NUL, &v));
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
    CHECK_OK(nkv_put(c, "a.bin", NKV_NUL, bin, sizeof bin, NULL));
    CHECK_OK(nkv_get(c, "a.bin", NKV_NUL, &v));
    CHECK(v->len == sizeof bin && memcmp(v->data, bin, sizeof bin) == 0,
          "binary value did not round-trip");
    nkv_value_free(v);

    /* an empty value, given as NULL + 0 */
    uint64_t re = 0;
    CHECK_OK(nkv_put(c, "a.empty", NKV_NUL, NULL, 0, &re));
    CHECK_OK(nkv_get(c, "a.empty", NKV_NUL, &v));
    CHECK(v->len == 0 && v->revision == re, "empty value: len %zu rev %llu", v->len,
          (unsigned long long)v->revision);
    nkv_value_free(v);

    /* a large value (512 KiB) */
    size_t big_len = 512 * 1024;
    uint8_t *big = (uint8_t *)malloc(big_len);
    for (size_t i = 0; i < big_len; i++) {
        big[i] = (uint8_t)(i * 7);
    }
    CHECK_OK(nkv_put(c, "a.big", NKV_NUL, big, big_len, NULL));
    CHECK_OK(nkv_get(c, "a.big", NKV_NUL, &v));
    CHECK(v->len == big_len && memcmp(v->data, big, big_len) == 0,
          "512 KiB value did not round-trip");
    nkv_value_free(v);
    free(big);

    /* missing key: NOT_FOUND, output untouched */
    nkv_value *untouched = (nkv_value *)PTR_SENTINEL;
    CHECK_STATUS(nkv_get(c, "a.missing", NKV_NUL, &untouched), NKV_ERR_NOT_FOUND);
    CHECK(untouched == (nkv_value *)PTR_SENTINEL, "failed nkv_get wrote *out");

    /* invalid keys */
    uint64_t rev = SENTINEL;
    const char *bad[] = {"", ".a", "a.", "a..b", "a b", "net.*", "tab\tkey"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nkv_status s = nkv_put(c, bad[i], NKV_NUL, BYTES("v"), 1, &rev);
        CHECK(s == NKV_ERR_INVALID_KEY, "nkv_put(\"%s\") returned %s, expected INVALID_KEY",
              bad[i], nkv_status_str(s));
        s = nkv_get(c, bad[i], NKV_NUL, &untouched);
        CHECK(s == NKV_ERR_INVALID_KEY, "nkv_get(\"%s\") returned %s, expected INVALID_KEY",
              bad[i], nkv_status_str(s));
    }
    const char invalid_utf8[] = {'a', '.', (char)0xff, (char)0xfe, 0};
    /* nkv.h: bad UTF-8 in an argument is NKV_ERR_INVALID_ARGUMENT (the wire
     * would say INVALID_KEY, but such a key never reaches the wire) */
    CHECK_STATUS(nkv_put(c, invalid_utf8, NKV_NUL, BYTES("v"), 1, &rev), NKV_ERR_INVALID_ARGUMENT);

    /* too long a key (1099 bytes; the harness starts the server with a limit of 1000),
     * too large a value (1 MiB + 1; limit 1000000) */
    char long_key[1100];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = 0;
    /* NB: protocol.md section 6 says TOO_LARGE for a key over max_key, but the
     * server and the client both answer INVALID_KEY (tests/server_abuse.rs,
     * tests/client_fake_server.rs); this follows the implementation. */
    CHECK_STATUS(nkv_put(c, long_key, NKV_NUL, BYTES("v"), 1, &rev), NKV_ERR_INVALID_KEY);
    size_t huge_len = 1024 * 1024 + 1;
    uint8_t *huge = (uint8_t *)calloc(1, huge_len);
    CHECK_STATUS(nkv_put(c, "a.huge", NKV_NUL, huge, huge_len, &rev), NKV_ERR_TOO_LARGE);
    free(huge);
    CHECK(rev == SENTINEL, "a failed nkv_put wrote *out_revision");

    /* the connection survived all of that */
    CHECK_OK(nkv_ping(c));
}

/* A failed condition writes nothing, and reports the key's current
 * revision (0: absent) in *out_revision, so that a retry needs no GET. */
static void test_put_if(nkv_client *c) {
    uint64_t r1 = 0, r2 = 0, rev = SENTINEL;
    CHECK_OK(nkv_put_if(c, "cond.k", NKV_NUL, BYTES("first"), 5, 0, &r1));
    CHECK(r1 > 0, "put_if revision %llu", (unsigned long long)r1);
    /* expected 0 means "must not exist": it exists, at r1 */
    CHECK_STATUS(nkv_put_if(c, "cond.k", NKV_NUL, BYTES("again"), 5, 0, &rev),
                 NKV_ERR_CONDITION_FAILED);
    CHECK(rev == r1, "put_if(expect absent) on a key at %llu reported %llu",
          (unsigned long long)r1, (unsigned long long)rev);
    rev = SENTINEL;
    CHECK_STATUS(nkv_put_if(c, "cond.k", NKV_NUL, BYTES("stale"), 5, r1 + 1000, &rev),
                 NKV_ERR_CONDITION_FAILED);
    CHECK(rev == r1, "put_if(wrong revision) reported %llu, the key is at %llu",
          (unsigned long long)rev, (unsigned long long)r1);
    CHECK_OK(nkv_put_if(c, "cond.k", NKV_NUL, BYTES("second"), 6, r1, &r2));
    CHECK(r2 > r1, "revision did not grow");
    rev = SENTINEL;
    CHECK_STATUS(nkv_put_if(c, "cond.k", NKV_NUL, BYTES("stale"), 5, r1, &rev),
                 NKV_ERR_CONDITION_FAILED);
    CHECK(rev == r2, "put_if(old revision) reported %llu, the key is at %llu",
          (unsigned long long)rev, (unsigned long long)r2);
    /* an absent key with an expected revision: current revision 0 */
    rev = SENTINEL;
    CHECK_STATUS(nkv_put_if(c, "cond.absent", NKV_NUL, BYTES("x"), 1, 5, &rev),
                 NKV_ERR_CONDITION_FAILED);
    CHECK(rev == 0, "put_if on an absent key reported revision %llu, expected 0",
          (unsigned long long)rev);
    /* the output may be NULL */
    CHECK_STATUS(nkv_put_if(c, "cond.k", NKV_NUL, BYTES("x"), 1, 0, NULL),
                 NKV_ERR_CONDITION_FAILED);

    nkv_value *v = NULL;
    CHECK_OK(nkv_get(c, "cond.k", NKV_NUL, &v));
    CHECK(v->len == 6 && memcmp(v->data, "second", 6) == 0 && v->revision == r2,
          "conditional puts that failed changed the value");
    nkv_value_free(v);
    CHECK_STATUS(nkv_get(c, "cond.absent", NKV_NUL, &v), NKV_ERR_NOT_FOUND);

    /* a deleted key is absent: expect 0 succeeds again */
    CHECK_OK(nkv_delete(c, "cond.k", NKV_NUL, NULL));
    rev = SENTINEL;
    CHECK_STATUS(nkv_put_if(c, "cond.k", NKV_NUL, BYTES("x"), 1, r2, &rev),
                 NKV_ERR_CONDITION_FAILED);
    CHECK(rev == 0, "put_if on a deleted key reported revision %llu", (unsigned long long)rev);
    CHECK_OK(nkv_put_if(c, "cond.k", NKV_NUL, BYTES("third"), 5, 0, NULL));
}

/* Entry i's key, checking that nkv_entries_key's length output agrees. */
static const char *entry_key(const nkv_entries *e, size_t i) {
    size_t len = SIZE_MAX;
    const char *key = nkv_entries_key(e, i, &len);
    CHECK(key != NULL, "nkv_entries_key(%zu) is NULL with %zu entries", i, nkv_entries_count(e));
    CHECK(len == strlen(key), "nkv_entries_key(%zu) gave length %zu for \"%s\"", i, len, key);
    CHECK(nkv_entries_key(e, i, NULL) == key, "the key pointer depends on key_len being NULL");
    return key;
}

static void test_list(nkv_client *c) {
    uint64_t ra = 0, rb = 0, rax = 0;
    put_str(c, "l.b", "B", &rb);
    put_str(c, "l.a", "A", &ra);
    put_str(c, "l.a.x", "AX", &rax);
    put_str(c, "lx", "not under l", NULL);
    put_str(c, "l", "the prefix itself", NULL);
    put_str(c, "l.empty", "", NULL);

    nkv_entries *e = NULL;
    CHECK_OK(nkv_list(c, "l", NKV_NUL, &e));
    CHECK(e != NULL, "nkv_list gave nothing");
    CHECK(nkv_entries_count(e) == 5,
          "list(\"l\") has %zu entries, expected 5 (l, l.a, l.a.x, l.b, l.empty)",
          nkv_entries_count(e));
    const char *keys[] = {"l", "l.a", "l.a.x", "l.b", "l.empty"};
    const char *vals[] = {"the prefix itself", "A", "AX", "B", ""};
    for (size_t i = 0; i < 5; i++) {
        const char *key = entry_key(e, i);
        CHECK(strcmp(key, keys[i]) == 0, "entry %zu is \"%s\", expected \"%s\"", i, key, keys[i]);
        size_t len = SIZE_MAX;
        const uint8_t *data = nkv_entries_value(e, i, &len);
        CHECK(len == strlen(vals[i]) && (len == 0 || memcmp(data, vals[i], len) == 0),
              "entry %s has the wrong value (%zu bytes)", keys[i], len);
        CHECK(len > 0 || data == NULL, "entry %s: an empty value is not NULL", keys[i]);
    }
    CHECK(nkv_entries_revision(e, 1) == ra && nkv_entries_revision(e, 2) == rax &&
              nkv_entries_revision(e, 3) == rb,
          "list revisions differ from put revisions");
    /* out of range */
    size_t len = 77;
    CHECK(nkv_entries_key(e, 5, &len) == NULL, "nkv_entries_key past the end is not NULL");
    CHECK(nkv_entries_value(e, 5, NULL) == NULL, "nkv_entries_value past the end is not NULL");
    CHECK(nkv_entries_revision(e, 5) == 0, "nkv_entries_revision past the end is not 0");
    CHECK(nkv_entries_key(e, SIZE_MAX, NULL) == NULL, "nkv_entries_key(SIZE_MAX) is not NULL");
    nkv_entries_free(e);

    CHECK_OK(nkv_list(c, "", NKV_NUL, &e));
    bool saw_lx = false;
    size_t n = nkv_entries_count(e);
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            CHECK(strcmp(entry_key(e, i - 1), entry_key(e, i)) < 0,
                  "list(\"\") not sorted: \"%s\" before \"%s\"", entry_key(e, i - 1),
                  entry_key(e, i));
        }
        saw_lx |= strcmp(entry_key(e, i), "lx") == 0;
    }
    CHECK(n >= 6 && saw_lx, "list(\"\") misses keys (%zu entries)", n);
    nkv_entries_free(e);

    /* a prefix given by length: "l.a" out of "l.axyz" */
    CHECK_OK(nkv_list(c, "l.axyz", 3, &e));
    CHECK(nkv_entries_count(e) == 2 && strcmp(entry_key(e, 0), "l.a") == 0 &&
              strcmp(entry_key(e, 1), "l.a.x") == 0,
          "list of the 3-byte prefix \"l.a\" gave %zu entries", nkv_entries_count(e));
    nkv_entries_free(e);

    CHECK_OK(nkv_list(c, "nothing.here", NKV_NUL, &e));
    CHECK(e != NULL && nkv_entries_count(e) == 0, "empty listing has %zu entries",
          nkv_entries_count(e));
    nkv_entries_free(e);

    /* NULL listings are harmless to read */
    CHECK(nkv_entries_count(NULL) == 0 && nkv_entries_key(NULL, 0, NULL) == NULL &&
              nkv_entries_value(NULL, 0, NULL) == NULL && nkv_entries_revision(NULL, 0) == 0,
          "reading a NULL listing");

    nkv_entries *untouched = (nkv_entries *)PTR_SENTINEL;
    CHECK_STATUS(nkv_list(c, "bad..prefix", NKV_NUL, &untouched), NKV_ERR_INVALID_KEY);
    CHECK(untouched == (nkv_entries *)PTR_SENTINEL, "failed nkv_list wrote *out");
}

static void test_delete(nkv_client *c) {
    uint64_t rput = 0, rdel = 0, rev = SENTINEL;
    put_str(c, "del.k", "v", &rput);
    CHECK_OK(nkv_delete(c, "del.k", NKV_NUL, &rdel));
    CHECK(rdel > rput, "delete revision %llu not above put revision %llu",
          (unsigned long long)rdel, (unsigned long long)rput);
    nkv_value *v = NULL;
    CHECK_STATUS(nkv_get(c, "del.k", NKV_NUL, &v), NKV_ERR_NOT_FOUND);
    CHECK_STATUS(nkv_delete(c, "del.k", NKV_NUL, &rev), NKV_ERR_NOT_FOUND);
    CHECK(rev == SENTINEL, "failed nkv_delete wrote *out_revision");
    put_str(c, "del.k2", "v", NULL);
    CHECK_OK(nkv_delete(c, "del.k2", NKV_NUL, NULL));
    CHECK_STATUS(nkv_delete(c, "bad..key", NKV_NUL, &rev), NKV_ERR_INVALID_KEY);

    /* conditional delete: a failed condition reports the current revision */
    uint64_t r1 = 0;
    put_str(c, "del.c", "v", &r1);
    CHECK_STATUS(nkv_delete_if(c, "del.c", NKV_NUL, r1 + 1000, &rev), NKV_ERR_CONDITION_FAILED);
    CHECK(rev == r1, "delete_if(wrong revision) reported %llu, the key is at %llu",
          (unsigned long long)rev, (unsigned long long)r1);
    rev = SENTINEL;
    /* 0 is refused */
    CHECK_STATUS(nkv_delete_if(c, "del.c", NKV_NUL, 0, &rev), NKV_ERR_INVALID_ARGUMENT);
    CHECK(rev == SENTINEL, "nkv_delete_if refused for its argument wrote *out_revision");
    CHECK_OK(nkv_get(c, "del.c", NKV_NUL, &v));
    nkv_value_free(v);
    CHECK_OK(nkv_delete_if(c, "del.c", NKV_NUL, r1, &rdel));
    CHECK(rdel > r1, "delete_if revision did not grow");
    CHECK_STATUS(nkv_get(c, "del.c", NKV_NUL, &v), NKV_ERR_NOT_FOUND);

    /* prefix delete: d, d.a, d.b, d.b.c go; dd and e stay */
    put_str(c, "d", "0", NULL);
    put_str(c, "d.a", "1", NULL);
    put_str(c, "d.b", "2", NULL);
    put_str(c, "d.b.c", "3", NULL);
    uint64_t rkeep = 0;
    put_str(c, "dd", "keep", &rkeep);
    uint64_t rp = SENTINEL, count = SENTINEL;
    CHECK_OK(nkv_delete_prefix(c, "d", NKV_NUL, &rp, &count));
    CHECK(count == 4, "delete_prefix(\"d\") deleted %llu keys, expected 4",
          (unsigned long long)count);
    CHECK(rp > rkeep, "delete_prefix revision %llu not above %llu", (unsigned long long)rp,
          (unsigned long long)rkeep);
    nkv_entries *e = NULL;
    CHECK_OK(nkv_list(c, "d", NKV_NUL, &e));
    CHECK(nkv_entries_count(e) == 0, "%zu keys under d survived the prefix delete",
          nkv_entries_count(e));
    nkv_entries_free(e);
    CHECK_OK(nkv_get(c, "dd", NKV_NUL, &v));
    CHECK(v->len == 4 && memcmp(v->data, "keep", 4) == 0, "dd was deleted with prefix d");
    nkv_value_free(v);

    count = SENTINEL;
    CHECK_OK(nkv_delete_prefix(c, "d", NKV_NUL, NULL, &count));
    CHECK(count == 0, "second delete_prefix deleted %llu keys", (unsigned long long)count);
    CHECK_OK(nkv_delete_prefix(c, "nothing", NKV_NUL, NULL, NULL));
    rp = SENTINEL;
    count = SENTINEL;
    CHECK_STATUS(nkv_delete_prefix(c, "bad..p", NKV_NUL, &rp, &count), NKV_ERR_INVALID_KEY);
    CHECK(rp == SENTINEL && count == SENTINEL, "failed delete_prefix wrote its outputs");
}

static void test_subscribe_basics(nkv_client *c) {
    uint64_t sub = SENTINEL;

    /* a failed subscribe writes nothing, never calls back, and has already
     * called free_user_data (once) when it returns */
    recorder failed;
    recorder_init(&failed);
    CHECK_STATUS(nkv_subscribe(c, "bad..key", NKV_NUL, recorder_cb, &failed, recorder_free, &sub),
                 NKV_ERR_INVALID_KEY);
    CHECK(sub == SENTINEL, "failed nkv_subscribe wrote *out_subscription");
    CHECK(recorder_count(&failed) == 0, "failed subscribe called the callback");
    CHECK(recorder_freed(&failed) == 1, "free_user_data called %d times for a failed subscribe",
          recorder_freed(&failed));
    CHECK(recorder_freed_here(&failed), "a failed subscribe freed on another thread");
    CHECK_STATUS(nkv_subscribe_since(c, "bad..key", NKV_NUL, 1, recorder_cb, &failed,
                                     recorder_free, &sub),
                 NKV_ERR_INVALID_KEY);
    CHECK(sub == SENTINEL && recorder_freed(&failed) == 2,
          "failed nkv_subscribe_since: output written or free_user_data not called");
    /* every kind of refusal frees, NULL client and NULL callback included */
    CHECK_STATUS(nkv_subscribe(NULL, "sb", NKV_NUL, recorder_cb, &failed, recorder_free, &sub),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_subscribe(c, "sb", NKV_NUL, NULL, &failed, recorder_free, &sub),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_subscribe(c, NULL, NKV_NUL, recorder_cb, &failed, recorder_free, &sub),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK(sub == SENTINEL && recorder_freed(&failed) == 5,
          "refused subscribes: output written or free_user_data called %d times, expected 5",
          recorder_freed(&failed));
    recorder_destroy(&failed);

    recorder r;
    recorder_init(&r);
    r.id = SENTINEL;
    uint64_t rx = 0;
    put_str(c, "sb.x", "1", &rx);
    CHECK_OK(recorder_subscribe(c, "sb", &r));
    CHECK(r.id != SENTINEL && r.id != 0, "nkv_subscribe wrote no subscription id");
    CHECK(recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 1,
          "expected UPDATE sb.x then SYNCED");
    rec_event u = recorder_get(&r, 0);
    CHECK(u.kind == NKV_EVENT_UPDATE && u.subscription == r.id && strcmp(u.key, "sb.x") == 0 &&
              u.revision == rx,
          "the snapshot event is not UPDATE sb.x of subscription %llu",
          (unsigned long long)r.id);
    CHECK(recorder_get(&r, 1).subscription == r.id, "SYNCED carries another subscription id");
    CHECK_OK(nkv_unsubscribe(c, r.id));
    CHECK(recorder_freed(&r) == 1, "free_user_data not called exactly once by nkv_unsubscribe (%d)",
          recorder_freed(&r));
    CHECK(recorder_freed_here(&r), "nkv_unsubscribe ran free_user_data on another thread");

    CHECK_STATUS(nkv_unsubscribe(c, r.id), NKV_ERR_NOT_FOUND);
    CHECK_STATUS(nkv_unsubscribe(c, 987654321), NKV_ERR_NOT_FOUND);
    CHECK_STATUS(nkv_unsubscribe(c, UINT64_MAX), NKV_ERR_NOT_FOUND);
    CHECK_STATUS(nkv_unsubscribe(c, 0), NKV_ERR_NOT_FOUND);
    CHECK(recorder_freed(&r) == 1, "free_user_data called again");
    recorder_check_invariants(&r, "subscribe basics");
    recorder_destroy(&r);

    /* a prefix given by its length: "sb" out of "sbxyz" */
    recorder p;
    recorder_init(&p);
    CHECK_OK(nkv_subscribe(c, "sbxyz", 2, recorder_cb, &p, recorder_free, &p.id));
    CHECK(recorder_wait_for(&p, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 1,
          "a 2-byte prefix \"sb\": expected UPDATE sb.x then SYNCED");
    CHECK_OK(nkv_unsubscribe(c, p.id));
    recorder_check_invariants(&p, "prefix by length");
    recorder_destroy(&p);

    /* a NULL free_user_data and a NULL out_subscription are allowed */
    recorder q;
    recorder_init(&q);
    CHECK_OK(nkv_subscribe(c, "sb", NKV_NUL, recorder_cb, &q, NULL, &q.id));
    CHECK(recorder_wait_for(&q, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 1, "no SYNCED");
    CHECK_OK(nkv_unsubscribe(c, q.id));
    recorder_check_invariants(&q, "no free_user_data");
    recorder_destroy(&q);
    /* with no id the subscription lasts until nkv_close (a static recorder) */
    static recorder forever;
    recorder_init(&forever);
    CHECK_OK(nkv_subscribe(c, "sb.none", NKV_NUL, recorder_cb, &forever, NULL, NULL));
    CHECK(recorder_wait_for(&forever, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 0, "no SYNCED");
}

/* nkv_stats, nkv_server_limits, nkv_state, nkv_compact. */
static void test_stats_limits_state(nkv_client *c) {
    uint64_t last = 0;
    put_str(c, "st.a", "1", NULL);
    put_str(c, "st.b", "2", &last);
    nkv_entries *all = NULL;
    CHECK_OK(nkv_list(c, "", NKV_NUL, &all));
    size_t keys = nkv_entries_count(all);
    nkv_entries_free(all);

    nkv_stats_list *st = NULL;
    CHECK_OK(nkv_stats(c, &st));
    CHECK(st != NULL && nkv_stats_count(st) > 0, "nkv_stats gave no counters");
    uint64_t v = SENTINEL;
    CHECK_OK(nkv_stats_find(st, "keys", &v));
    CHECK(v == keys, "stats \"keys\" = %llu, nkv_list(\"\") has %zu", (unsigned long long)v, keys);
    CHECK_OK(nkv_stats_find(st, "revision", &v));
    CHECK(v >= last, "stats \"revision\" = %llu, below the last put's %llu", (unsigned long long)v,
          (unsigned long long)last);
    CHECK_OK(nkv_stats_find(st, "connections", &v));
    CHECK(v >= 1, "stats \"connections\" = %llu", (unsigned long long)v);
    CHECK_OK(nkv_stats_find(st, "ops.put", &v));
    CHECK(v >= 2, "stats \"ops.put\" = %llu", (unsigned long long)v);
    v = SENTINEL;
    CHECK_STATUS(nkv_stats_find(st, "no.such.counter", &v), NKV_ERR_NOT_FOUND);
    CHECK(v == SENTINEL, "a failed nkv_stats_find wrote its output");
    CHECK_STATUS(nkv_stats_find(st, NULL, &v), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_stats_find(st, "keys", NULL), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_stats_find(NULL, "keys", &v), NKV_ERR_INVALID_ARGUMENT);
    /* names and values by index agree with nkv_stats_find */
    size_t n = nkv_stats_count(st);
    bool saw_keys = false;
    for (size_t i = 0; i < n; i++) {
        const char *name = nkv_stats_name(st, i);
        CHECK(name != NULL && name[0] != '\0', "counter %zu has no name", i);
        uint64_t found = 0;
        CHECK_OK(nkv_stats_find(st, name, &found));
        saw_keys |= strcmp(name, "keys") == 0;
        if (strcmp(name, "keys") == 0) {
            CHECK(nkv_stats_value(st, i) == keys, "counter keys by index differs");
        }
    }
    CHECK(saw_keys, "no counter named keys among the %zu", n);
    CHECK(nkv_stats_name(st, n) == NULL && nkv_stats_value(st, n) == 0,
          "a counter past the end");
    nkv_stats_free(st);
    CHECK(nkv_stats_count(NULL) == 0 && nkv_stats_name(NULL, 0) == NULL &&
              nkv_stats_value(NULL, 0) == 0,
          "reading NULL counters");

    /* the limits the server announced (tests/c_api.rs starts it with them) */
    const char *want_key = getenv("NKV_TEST_MAX_KEY");
    const char *want_value = getenv("NKV_TEST_MAX_VALUE");
    CHECK(want_key != NULL && want_value != NULL,
          "NKV_TEST_MAX_KEY / NKV_TEST_MAX_VALUE not set by the harness");
    uint32_t max_key = 0, max_value = 0, max_frame = 0;
    CHECK_OK(nkv_server_limits(c, &max_key, &max_value, &max_frame));
    CHECK(max_key == (uint32_t)atol(want_key) && max_value == (uint32_t)atol(want_value),
          "nkv_server_limits: key %u value %u, the server was started with %s and %s", max_key,
          max_value, want_key, want_value);
    CHECK(max_frame > max_value, "max_frame %u is not above max_value %u", max_frame,
          max_value);
    CHECK_OK(nkv_server_limits(c, NULL, NULL, NULL));
    uint32_t only_value = 0;
    CHECK_OK(nkv_server_limits(c, NULL, &only_value, NULL));
    CHECK(only_value == max_value, "nkv_server_limits with NULL outputs");

    CHECK(nkv_state(c) == NKV_STATE_CONNECTED, "nkv_state = %s", nkv_state_str(nkv_state(c)));

    uint64_t before = SENTINEL, after = SENTINEL;
    CHECK_OK(nkv_compact(c, &before, &after));
    CHECK(before != SENTINEL && after != SENTINEL && after > 0,
          "nkv_compact: %llu bytes before, %llu after", (unsigned long long)before,
          (unsigned long long)after);
    CHECK_OK(nkv_compact(c, NULL, NULL));
    /* the data survived the compaction */
    nkv_value *val = NULL;
    CHECK_OK(nkv_get(c, "st.b", NKV_NUL, &val));
    CHECK(val->revision == last, "st.b changed in a compaction");
    nkv_value_free(val);
}

/* A deadline far away changes nothing; nkv_deadline_clear removes it.
 * (That it bounds this thread's calls, and only this thread's, is checked
 * with a stopped server in test_ping_and_timeout.) */
static void test_deadline_far_away(nkv_client *c) {
    nkv_deadline_set(60000);
    CHECK_OK(nkv_ping(c));
    put_str(c, "deadline.k", "v", NULL);
    nkv_deadline_clear();
    nkv_deadline_clear(); /* twice is fine */
    CHECK_OK(nkv_ping(c));

    /* A deadline already past fails the call before it is sent: the put
     * must not change the store even though the server answers fast. */
    nkv_deadline_set(1);
    sleep_ms(20);
    nkv_status late = nkv_put(c, "deadline.k", NKV_NUL, BYTES("late"), 4, NULL);
    nkv_deadline_clear();
    CHECK(late == NKV_ERR_TIMEOUT, "a put after the deadline passed returned %s",
          nkv_status_str(late));
    nkv_value *v = NULL;
    CHECK_OK(nkv_get(c, "deadline.k", NKV_NUL, &v));
    CHECK(v != NULL && v->len == 1 && memcmp(v->data, "v", 1) == 0,
          "a put refused for its passed deadline still changed the value");
    nkv_value_free(v);
}

struct deadline_thread {
    nkv_client *c;
    nkv_status status;
    int64_t done_at; /* now_ms() when its ping returned */
};

static void *ping_without_deadline(void *arg) {
    struct deadline_thread *t = (struct deadline_thread *)arg;
    t->status = nkv_ping(t->c);
    t->done_at = now_ms();
    return NULL;
}

static void test_ping_and_timeout(nkv_client *c) {
    CHECK_OK(nkv_ping(c));
    CHECK_OK(nkv_set_timeout(c, 5000));
    CHECK_STATUS(nkv_set_timeout(c, 0), NKV_ERR_INVALID_ARGUMENT);
    CHECK_OK(nkv_ping(c));

    pid_t pid = server_pid();
    if (pid == 0) {
        printf("note: NKV_SERVER_PID not set; request timeout not exercised\n");
        return;
    }
    CHECK_OK(nkv_set_timeout(c, 300));
    server_stop(pid);
    int64_t t0 = now_ms();
    nkv_status s = nkv_ping(c);
    int64_t took = now_ms() - t0;
    uint64_t rev = SENTINEL;
    nkv_status s2 = nkv_put(c, "timeout.k", NKV_NUL, BYTES("v"), 1, &rev);

    /* The client's timeout is long now; this thread's deadline is shorter
     * and covers the calls after it together; another thread (no deadline)
     * keeps waiting for its answer. */
    CHECK_OK(nkv_set_timeout(c, 10000));
    struct deadline_thread other = {c, NKV_ERR_PANIC, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, ping_without_deadline, &other) == 0, "pthread_create");
    nkv_deadline_set(300);
    int64_t t1 = now_ms();
    nkv_status s3 = nkv_ping(c);
    int64_t took3 = now_ms() - t1;
    int64_t t2 = now_ms();
    nkv_value *val = (nkv_value *)PTR_SENTINEL;
    nkv_status s4 = nkv_get(c, "timeout.k", NKV_NUL, &val); /* the deadline has passed */
    int64_t took4 = now_ms() - t2;
    nkv_deadline_clear();
    sleep_ms(700);
    int64_t released = now_ms();
    server_cont(pid);
    pthread_join(th, NULL);

    CHECK(s == NKV_ERR_TIMEOUT, "ping to a stopped server returned %s, expected NKV_ERR_TIMEOUT",
          nkv_status_str(s));
    CHECK(took >= 250 && took < 5000, "a 300 ms timeout took %lld ms", (long long)took);
    CHECK(s2 == NKV_ERR_TIMEOUT, "put to a stopped server returned %s", nkv_status_str(s2));
    CHECK(rev == SENTINEL, "a timed-out put wrote *out_revision");
    CHECK(s3 == NKV_ERR_TIMEOUT, "ping with a 300 ms deadline returned %s", nkv_status_str(s3));
    CHECK(took3 >= 250 && took3 < 5000, "a 300 ms deadline took %lld ms", (long long)took3);
    CHECK(s4 == NKV_ERR_TIMEOUT && val == PTR_SENTINEL,
          "a get after the deadline passed returned %s", nkv_status_str(s4));
    CHECK(took4 < 200, "a call after the deadline passed still waited %lld ms",
          (long long)took4);
    CHECK(other.status == NKV_OK && other.done_at >= released,
          "another thread's ping ended (%s) %lld ms before the server came back: the deadline "
          "is not per thread",
          nkv_status_str(other.status), (long long)(released - other.done_at));

    /* once the server runs again the client works again */
    int64_t deadline = now_ms() + WAIT_MS;
    while (nkv_ping(c) != NKV_OK) {
        CHECK(now_ms() < deadline, "client never recovered after a timeout");
        sleep_ms(50);
    }
    put_str(c, "timeout.after", "ok", NULL);
    nkv_value *v = NULL;
    CHECK_OK(nkv_get(c, "timeout.after", NKV_NUL, &v));
    CHECK(v->len == 2 && memcmp(v->data, "ok", 2) == 0, "wrong value after a timeout");
    nkv_value_free(v);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    watchdog_program("test_api");
    test_version_and_status_strings();
    test_connect_errors();
    test_abi_mismatch();
    test_options();
    nkv_client *c = test_connect();
    test_null_arguments(c);
    test_key_lengths(c);
    test_last_error(c);
    test_last_error_is_per_thread(c);
    test_put_get(c);
    test_put_if(c);
    test_list(c);
    test_delete(c);
    test_subscribe_basics(c);
    test_stats_limits_state(c);
    test_deadline_far_away(c);
    test_ping_and_timeout(c);
    nkv_close(c);
    printf("test_api: OK\n");
    return 0;
}
