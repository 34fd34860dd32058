/* Transactions, ephemeral keys and grouped subscriptions from C:
 * - an ephemeral key is gone once its owner disconnects, as a second client
 *   sees it (a DELETE event, then NKV_ERR_NOT_FOUND); a leader claim
 *   (nkv_put_ephemeral_if with 0) succeeds once and reports the holder's
 *   revision to the loser;
 * - a transaction applies its operations under one revision; a failed
 *   condition changes nothing, returns NKV_ERR_CONDITION_FAILED with the
 *   key's revision, and names the key (nkv_txn_failed_key, nkv_last_error);
 *   the limits and bad arguments give their statuses;
 * - a grouped subscription (nkv_subscribe_flags) receives a GROUP with
 *   the count and the revision, then the transaction's events; unknown
 *   flags are refused and the user data freed. */
#include "nkv_test.h"

static void ephemeral_keys(void) {
    nkv_client *owner = test_connect();
    nkv_client *other = test_connect();
    recorder r;
    recorder_init(&r);
    CHECK_OK(recorder_subscribe(other, "svc", &r));
    CHECK(recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) >= 0, "no SYNCED");

    uint64_t rev = 0;
    CHECK_OK(nkv_put_ephemeral(owner, "svc.netd.alive", NKV_NUL, "1", 1, 0, &rev));
    CHECK(rev > 0, "no revision");
    nkv_value *v = NULL;
    CHECK_OK(nkv_get(other, "svc.netd.alive", NKV_NUL, &v));
    CHECK(v->revision == rev, "revision %llu", (unsigned long long)v->revision);
    nkv_value_free(v);
    CHECK_STATUS(nkv_put_ephemeral(owner, "svc.x", NKV_NUL, "1", 1, 600001, NULL),
                 NKV_ERR_INVALID_ARGUMENT);

    /* A leader claim: the first wins, the second learns the revision. */
    uint64_t claim = 0, lost = 0;
    CHECK_OK(nkv_put_ephemeral_if(owner, "svc.leader", NKV_NUL, "a", 1, 0, 0, &claim));
    CHECK_STATUS(nkv_put_ephemeral_if(other, "svc.leader", NKV_NUL, "b", 1, 0, 0, &lost),
                 NKV_ERR_CONDITION_FAILED);
    CHECK(lost == claim, "loser got %llu, the claim is %llu", (unsigned long long)lost,
          (unsigned long long)claim);

    nkv_close(owner);
    long del = recorder_wait_for(&r, 0, NKV_EVENT_DELETE, "svc.netd.alive", WAIT_MS);
    CHECK(del >= 0, "no DELETE of svc.netd.alive after the owner closed");
    CHECK(recorder_wait_for(&r, 0, NKV_EVENT_DELETE, "svc.leader", WAIT_MS) >= 0,
          "no DELETE of svc.leader");
    CHECK_STATUS(nkv_get(other, "svc.netd.alive", NKV_NUL, &v), NKV_ERR_NOT_FOUND);
    /* Freed: the other client can claim it now. */
    CHECK_OK(nkv_put_ephemeral_if(other, "svc.leader", NKV_NUL, "b", 1, 0, 0, NULL));
    nkv_close(other);
    recorder_check_invariants(&r, "ephemeral watcher");
    recorder_destroy(&r);
}

static void transactions(void) {
    nkv_client *c = test_connect();
    uint64_t x = 0;
    put_str(c, "net.x", "1", &x);
    put_str(c, "net.old", "o", NULL);
    put_str(c, "tmp.a", "a", NULL);
    put_str(c, "tmp.b.c", "c", NULL);

    nkv_txn *t = nkv_txn_new();
    CHECK(t != NULL, "nkv_txn_new");
    CHECK_OK(nkv_txn_if_revision(t, "net.x", NKV_NUL, x));
    CHECK_OK(nkv_txn_if_absent(t, "net.lock", NKV_NUL));
    CHECK_OK(nkv_txn_put(t, "net.lock", NKV_NUL, "me", 2));
    CHECK_OK(nkv_txn_delete(t, "net.old", NKV_NUL));
    CHECK_OK(nkv_txn_delete_prefix(t, "tmp", 3));
    uint64_t rev = 0;
    uint32_t deleted = 99;
    CHECK_OK(nkv_txn_commit(c, t, &rev, &deleted));
    CHECK(deleted == 3, "deleted %u", deleted);
    CHECK(nkv_txn_failed_key(t, NULL) == NULL, "a failed key after success");
    nkv_value *v = NULL;
    CHECK_OK(nkv_get(c, "net.lock", NKV_NUL, &v));
    CHECK(v->revision == rev && v->len == 2 && memcmp(v->data, "me", 2) == 0, "net.lock");
    nkv_value_free(v);
    CHECK_STATUS(nkv_get(c, "net.old", NKV_NUL, &v), NKV_ERR_NOT_FOUND);
    CHECK_STATUS(nkv_get(c, "tmp.b.c", NKV_NUL, &v), NKV_ERR_NOT_FOUND);

    /* Again: net.lock exists now. */
    uint64_t current = 0;
    deleted = 99;
    CHECK_STATUS(nkv_txn_commit(c, t, &current, &deleted), NKV_ERR_CONDITION_FAILED);
    CHECK(current == rev, "current revision %llu, expected %llu",
          (unsigned long long)current, (unsigned long long)rev);
    CHECK(deleted == 99, "deleted written on failure");
    size_t len = 0;
    const char *key = nkv_txn_failed_key(t, &len);
    CHECK(key != NULL && len == 8 && strcmp(key, "net.lock") == 0, "failed key %s",
          key ? key : "(null)");
    char message[256];
    nkv_last_error(message, sizeof message);
    CHECK(strstr(message, "net.lock") != NULL, "last error: %s", message);
    CHECK_OK(nkv_get(c, "net.x", NKV_NUL, &v));
    CHECK(v->revision == x, "net.x changed");
    nkv_value_free(v);
    nkv_txn_free(t);

    /* Limits and mistakes. */
    t = nkv_txn_new();
    char name[32];
    for (int i = 0; i < 257; i++) {
        snprintf(name, sizeof name, "k%d", i);
        CHECK_OK(nkv_txn_if_absent(t, name, NKV_NUL));
    }
    CHECK_STATUS(nkv_txn_commit(c, t, NULL, NULL), NKV_ERR_LIMIT);
    nkv_txn_free(t);
    t = nkv_txn_new();
    CHECK_OK(nkv_txn_put(t, "bad..key", NKV_NUL, "v", 1));
    CHECK_STATUS(nkv_txn_commit(c, t, NULL, NULL), NKV_ERR_INVALID_KEY);
    nkv_txn_free(t);
    t = nkv_txn_new();
    CHECK_STATUS(nkv_txn_if_absent(NULL, "k", NKV_NUL), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_txn_put(t, NULL, 0, "v", 1), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_txn_put(t, "k", NKV_NUL, NULL, 1), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_txn_delete(t, "\xff", 1), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_txn_commit(c, NULL, NULL, NULL), NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_txn_commit(NULL, t, NULL, NULL), NKV_ERR_INVALID_ARGUMENT);
    CHECK(nkv_txn_failed_key(NULL, NULL) == NULL, "failed key of NULL");
    /* Empty: changes nothing, the current revision. */
    CHECK_OK(nkv_txn_commit(c, t, &current, &deleted));
    CHECK(current == rev && deleted == 0, "empty transaction");
    nkv_txn_free(t);
    nkv_txn_free(NULL);
    nkv_close(c);
}

static void grouped(void) {
    nkv_client *c = test_connect();
    recorder r;
    recorder_init(&r);
    CHECK_OK(nkv_subscribe_flags(c, "grp", NKV_NUL, NKV_SUBSCRIBE_GROUPED, 0, recorder_cb, &r,
                                 recorder_free, &r.id));
    CHECK(recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) >= 0, "no SYNCED");
    nkv_txn *t = nkv_txn_new();
    CHECK_OK(nkv_txn_put(t, "grp.a", NKV_NUL, "1", 1));
    CHECK_OK(nkv_txn_put(t, "grp.b", NKV_NUL, "2", 1));
    uint64_t rev = 0;
    CHECK_OK(nkv_txn_commit(c, t, &rev, NULL));
    nkv_txn_free(t);
    long g = recorder_wait_for(&r, 0, NKV_EVENT_GROUP, NULL, WAIT_MS);
    CHECK(g >= 0, "no GROUP");
    CHECK(recorder_wait_for(&r, (size_t)g + 1, NKV_EVENT_UPDATE, "grp.b", WAIT_MS) >= 0,
          "no grp.b after the GROUP");
    rec_event group = recorder_get(&r, (size_t)g);
    CHECK(group.count == 2 && group.revision == rev && group.coalesced == 0,
          "GROUP count %u revision %llu", (unsigned)group.count,
          (unsigned long long)group.revision);
    for (size_t i = 1; i <= 2; i++) {
        rec_event e = recorder_get(&r, (size_t)g + i);
        CHECK(e.kind == NKV_EVENT_UPDATE && e.revision == rev && e.count == 0,
              "event %zu after the GROUP", i);
    }
    /* Resume and grouped together: the changes after rev - 1, then SYNCED. */
    recorder again;
    recorder_init(&again);
    CHECK_OK(nkv_subscribe_flags(c, "grp", NKV_NUL,
                                 NKV_SUBSCRIBE_GROUPED | NKV_SUBSCRIBE_RESUME, rev - 1,
                                 recorder_cb, &again, recorder_free, &again.id));
    long synced = recorder_wait_for(&again, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS);
    CHECK(synced == 2, "resume: SYNCED at %ld", synced);
    /* Unknown flags: refused, user data freed before returning. */
    recorder bad;
    recorder_init(&bad);
    CHECK_STATUS(nkv_subscribe_flags(c, "grp", NKV_NUL, 4, 0, recorder_cb, &bad, recorder_free,
                                     &bad.id),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK(recorder_freed(&bad) == 1, "user data of a refused subscribe not freed");
    nkv_close(c);
    recorder_check_invariants(&r, "grouped");
    recorder_check_invariants(&again, "grouped resume");
    recorder_destroy(&r);
    recorder_destroy(&again);
    recorder_destroy(&bad);
}

int main(void) {
    watchdog_program("test_txn");
    ephemeral_keys();
    transactions();
    grouped();
    printf("test_txn: OK\n");
    return 0;
}
