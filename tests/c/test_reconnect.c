/*
 * test_reconnect.c: a subscription survives the server being killed.
 *
 * Talks to the harness (tests/c_api.rs) by lines:
 *   program -> "KILL"      harness kills the server with SIGKILL, starts a
 *                          second server on the same data directory but on
 *                          another socket, and answers "SIDE <addr>";
 *   program -> "RESTART"   (after changing data through the side server)
 *                          harness stops the side server, starts the real one
 *                          again on its usual socket, and answers "GO".
 * So while the subscribed client cannot reach its server, the data changes;
 * on reconnect the callback must see DISCONNECTED, then the changes it
 * missed (or RESET and a full snapshot), then SYNCED. Requests during the
 * outage must fail fast with NKV_ERR_CONNECTION.
 */
#include "nkv_test.h"

static char *ask(const char *command, const char *expect_prefix) {
    static char line[1024];
    printf("%s\n", command);
    fflush(stdout);
    CHECK(fgets(line, sizeof line, stdin) != NULL, "harness did not answer %s", command);
    line[strcspn(line, "\r\n")] = 0;
    CHECK(strncmp(line, expect_prefix, strlen(expect_prefix)) == 0,
          "harness answered \"%s\" to %s", line, command);
    return line + strlen(expect_prefix);
}

/* A tiny key -> value map rebuilt from the events. */
#define MAX_KEYS 16
struct view {
    char keys[MAX_KEYS][64];
    char vals[MAX_KEYS][64];
    uint64_t revs[MAX_KEYS];
    int n;
};

static void view_set(struct view *v, const char *key, const char *val, uint64_t rev) {
    for (int i = 0; i < v->n; i++) {
        if (strcmp(v->keys[i], key) == 0) {
            snprintf(v->vals[i], sizeof v->vals[i], "%s", val);
            v->revs[i] = rev;
            return;
        }
    }
    CHECK(v->n < MAX_KEYS, "too many keys");
    snprintf(v->keys[v->n], sizeof v->keys[0], "%s", key);
    snprintf(v->vals[v->n], sizeof v->vals[0], "%s", val);
    v->revs[v->n] = rev;
    v->n++;
}

static void view_del(struct view *v, const char *key) {
    for (int i = 0; i < v->n; i++) {
        if (strcmp(v->keys[i], key) == 0) {
            v->n--;
            memmove(v->keys[i], v->keys[v->n], sizeof v->keys[0]);
            memmove(v->vals[i], v->vals[v->n], sizeof v->vals[0]);
            v->revs[i] = v->revs[v->n];
            return;
        }
    }
}

/* Applies events [from, to) of the recorder to the view. */
static void view_apply(struct view *v, recorder *r, size_t from, size_t to) {
    for (size_t i = from; i < to; i++) {
        rec_event e = recorder_get(r, i);
        switch (e.kind) {
        case NKV_EVENT_UPDATE:
            view_set(v, e.key, (const char *)e.data, e.revision);
            break;
        case NKV_EVENT_DELETE:
            view_del(v, e.key);
            break;
        case NKV_EVENT_RESET:
            v->n = 0;
            break;
        default:
            break;
        }
    }
}

/* The view equals what the server lists under `prefix`. */
static void view_check(struct view *v, nkv_client *c, const char *prefix) {
    nkv_entries *e = NULL;
    CHECK_OK(nkv_list(c, prefix, NKV_NUL, &e));
    size_t n = nkv_entries_count(e);
    CHECK((int)n == v->n, "server has %zu keys under %s, the callback's view has %d", n, prefix,
          v->n);
    for (size_t i = 0; i < n; i++) {
        const char *key = nkv_entries_key(e, i, NULL);
        size_t len = 0;
        const uint8_t *data = nkv_entries_value(e, i, &len);
        uint64_t rev = nkv_entries_revision(e, i);
        bool found = false;
        for (int j = 0; j < v->n; j++) {
            if (strcmp(v->keys[j], key) == 0) {
                found = true;
                CHECK(strlen(v->vals[j]) == len && memcmp(v->vals[j], data, len) == 0,
                      "view has %s=%s, server differs", v->keys[j], v->vals[j]);
                CHECK(v->revs[j] == rev, "view has %s at %llu, server at %llu", v->keys[j],
                      (unsigned long long)v->revs[j], (unsigned long long)rev);
            }
        }
        CHECK(found, "the callback's view lacks %s", key);
    }
    nkv_entries_free(e);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    watchdog_program("test_reconnect");
    nkv_client *c = test_connect();
    CHECK_OK(nkv_set_timeout(c, 3000));
    put_str(c, "r.a", "1", NULL);
    put_str(c, "r.b", "2", NULL);
    put_str(c, "r.c", "3", NULL);

    recorder r;
    recorder_init(&r);
    CHECK_OK(recorder_subscribe(c, "r", &r));
    CHECK(recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 3, "snapshot of 3 keys");
    put_str(c, "r.a", "1b", NULL);
    CHECK(recorder_wait_for(&r, 4, NKV_EVENT_UPDATE, "r.a", WAIT_MS) == 4, "live r.a");

    /* --- the server dies */
    const char *side = ask("KILL", "SIDE ");
    char side_addr[512];
    snprintf(side_addr, sizeof side_addr, "%s", side);

    long disc = recorder_wait_for(&r, 5, NKV_EVENT_DISCONNECTED, NULL, WAIT_MS);
    if (disc < 0) {
        recorder_dump(&r, "waiting for DISCONNECTED");
    }
    CHECK(disc == 5, "DISCONNECTED is event %ld, expected 5", disc);
    rec_event de = recorder_get(&r, (size_t)disc);
    CHECK(de.key == NULL && de.data == NULL && de.revision == 0,
          "DISCONNECTED carries data");

    /* requests fail fast while the server is away */
    uint64_t rev = 12345;
    int64_t t0 = now_ms();
    nkv_status s = nkv_put(c, "r.during", NKV_NUL, BYTES("x"), 1, &rev);
    int64_t took = now_ms() - t0;
    CHECK(s == NKV_ERR_CONNECTION, "put during the outage returned %s, expected NKV_ERR_CONNECTION",
          nkv_status_str(s));
    CHECK(took < 2000, "put during the outage took %lld ms, expected to fail fast",
          (long long)took);
    CHECK(rev == 12345, "a failed put wrote *out_revision");
    t0 = now_ms();
    s = nkv_ping(c);
    CHECK(s == NKV_ERR_CONNECTION && now_ms() - t0 < 2000, "ping during the outage: %s",
          nkv_status_str(s));
    nkv_value *v = NULL;
    CHECK_STATUS(nkv_get(c, "r.a", NKV_NUL, &v), NKV_ERR_CONNECTION);

    /* change the data while the client cannot see it */
    nkv_client *other = NULL;
    CHECK_OK(nkv_connect(side_addr, &other));
    put_str(other, "r.a", "after", NULL);
    CHECK_OK(nkv_delete(other, "r.b", NKV_NUL, NULL));
    put_str(other, "r.d", "new", NULL);
    put_str(other, "q.x", "not covered", NULL);
    nkv_close(other);

    /* --- the server comes back */
    ask("RESTART", "GO");
    long synced = recorder_wait_for(&r, (size_t)disc + 1, NKV_EVENT_SYNCED, NULL, 30000);
    if (synced < 0) {
        recorder_dump(&r, "waiting for SYNCED after restart");
    }
    CHECK(synced > disc, "no SYNCED within 30 s of the restart");

    /* between DISCONNECTED and SYNCED: the missed changes, or RESET + snapshot */
    size_t first = (size_t)disc + 1;
    rec_event e0 = recorder_get(&r, first);
    size_t n_between = (size_t)synced - first;
    if (e0.kind == NKV_EVENT_RESET) {
        printf("reconnect: RESET and a snapshot of %zu keys\n", n_between - 1);
        CHECK(n_between == 4, "RESET then %zu events, expected the 3 keys r.a, r.c, r.d",
              n_between - 1);
    } else {
        printf("reconnect: resumed with %zu missed changes\n", n_between);
        if (n_between != 3) {
            recorder_dump(&r, "resume");
        }
        CHECK(n_between == 3, "%zu events between DISCONNECTED and SYNCED, expected 3 "
                              "(UPDATE r.a, DELETE r.b, UPDATE r.d)",
              n_between);
        bool ua = false, db = false, ud = false;
        for (size_t i = first; i < (size_t)synced; i++) {
            rec_event e = recorder_get(&r, i);
            ua |= e.kind == NKV_EVENT_UPDATE && strcmp(e.key, "r.a") == 0 &&
                  strcmp((const char *)e.data, "after") == 0;
            db |= e.kind == NKV_EVENT_DELETE && strcmp(e.key, "r.b") == 0;
            ud |= e.kind == NKV_EVENT_UPDATE && strcmp(e.key, "r.d") == 0 &&
                  strcmp((const char *)e.data, "new") == 0;
        }
        CHECK(ua && db && ud, "missed changes incomplete: r.a=%d r.b deleted=%d r.d=%d", ua, db,
              ud);
    }
    for (size_t i = first; i < (size_t)synced; i++) {
        rec_event e = recorder_get(&r, i);
        CHECK(e.kind != NKV_EVENT_DISCONNECTED && e.kind != NKV_EVENT_CLOSED,
              "%s between DISCONNECTED and SYNCED", kind_name(e.kind));
        CHECK(e.key == NULL || strncmp(e.key, "r.", 2) == 0, "event for uncovered key %s",
              e.key);
    }

    /* the client works again; the callback's view equals the server's state */
    int64_t deadline = now_ms() + WAIT_MS;
    while (nkv_ping(c) != NKV_OK) {
        CHECK(now_ms() < deadline, "requests still fail after the subscription resynced");
        sleep_ms(50);
    }
    struct view view;
    memset(&view, 0, sizeof view);
    view_apply(&view, &r, 0, (size_t)synced + 1);
    view_check(&view, c, "r");

    /* live events flow again */
    uint64_t rl = 0;
    put_str(c, "r.live", "again", &rl);
    long il = recorder_wait_for(&r, (size_t)synced + 1, NKV_EVENT_UPDATE, "r.live", WAIT_MS);
    CHECK(il == synced + 1, "live event after reconnect at %ld, expected %ld", il, synced + 1);
    CHECK(recorder_get(&r, (size_t)il).revision == rl, "live event revision");

    nkv_close(c);
    CHECK(recorder_freed(&r) == 1, "free_user_data called %d times", recorder_freed(&r));
    size_t n = recorder_count(&r);
    CHECK(recorder_get(&r, n - 1).kind == NKV_EVENT_CLOSED, "last event is not CLOSED");
    recorder_check_invariants(&r, "reconnect");
    recorder_destroy(&r);
    printf("test_reconnect: OK\n");
    return 0;
}
