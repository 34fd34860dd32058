/*
 * test_fork.c: a client inherited through fork() fails fast in the child.
 *
 * The parent has a connected client with a live subscription. The child uses
 * it: every call must return an error (NKV_ERR_CONNECTION) quickly, and
 * nkv_close must return, never hang. An alarm kills a hung child, which the
 * parent reports. The parent's client must be unaffected by all this.
 *
 * Needs NKV_ADDR (a live, empty server).
 */
#include "nkv_test.h"

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>

/* In the child: report and exit with a distinct code (no atexit handlers). */
#define CHILD_CHECK(cond, code, ...)                                           \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "child: FAILED: " __VA_ARGS__);                    \
            fprintf(stderr, "\n");                                             \
            _exit(code);                                                       \
        }                                                                      \
    } while (0)

/* Success in the child. What the parent's client threads owned cannot be
 * freed in the child (those threads do not exist here), so under valgrind an
 * exit would report it as lost; exec'ing /bin/true ends the child without
 * that report. The harness still scans the child's valgrind output for
 * invalid accesses. */
static void child_success(void) {
    fflush(stdout);
    execl("/bin/true", "true", (char *)NULL);
    _exit(0);
}

static void child_uses_inherited_client(nkv_client *c, uint64_t sub) {
    alarm(20); /* a hang ends in SIGALRM, which the parent reports */
    int64_t t0 = now_ms();
    uint64_t rev = 777;
    nkv_status s = nkv_put(c, "f.child", NKV_NUL, BYTES("x"), 1, &rev);
    CHILD_CHECK(s == NKV_ERR_CONNECTION, 10, "nkv_put in the child returned %s",
                nkv_status_str(s));
    CHILD_CHECK(rev == 777, 11, "failed put wrote *out_revision");
    nkv_value *v = NULL;
    s = nkv_get(c, "f.parent", NKV_NUL, &v);
    CHILD_CHECK(s == NKV_ERR_CONNECTION, 12, "nkv_get in the child returned %s",
                nkv_status_str(s));
    nkv_entries *e = NULL;
    s = nkv_list(c, "", NKV_NUL, &e);
    CHILD_CHECK(s == NKV_ERR_CONNECTION, 13, "nkv_list in the child returned %s",
                nkv_status_str(s));
    s = nkv_ping(c);
    CHILD_CHECK(s == NKV_ERR_CONNECTION, 14, "nkv_ping in the child returned %s",
                nkv_status_str(s));
    uint64_t sub2 = 0;
    s = nkv_subscribe(c, "f", NKV_NUL, recorder_cb, NULL, NULL, &sub2);
    CHILD_CHECK(s == NKV_ERR_CONNECTION, 15, "nkv_subscribe in the child returned %s",
                nkv_status_str(s));
    s = nkv_unsubscribe(c, sub);
    CHILD_CHECK(s != NKV_OK, 16, "nkv_unsubscribe in the child returned NKV_OK");
    char msg[256];
    CHILD_CHECK(nkv_last_error(msg, sizeof msg) > 0, 17, "no last error message in the child");
    nkv_close(c);
    int64_t took = now_ms() - t0;
    CHILD_CHECK(took < 5000, 18, "the child's calls took %lld ms", (long long)took);
    printf("child: every call failed fast (%lld ms); last error: %s\n", (long long)took, msg);
    child_success();
}

static void child_closes_at_once(nkv_client *c) {
    alarm(20);
    nkv_close(c);
    child_success();
}

static void run_child(void (*body)(nkv_client *, uint64_t), nkv_client *c, uint64_t sub,
                      const char *what) {
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        body(c, sub);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(!(WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM),
          "%s: the child hung (killed by its 20 s alarm)", what);
    CHECK(WIFEXITED(status), "%s: the child died of signal %d", what,
          WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    CHECK(WEXITSTATUS(status) == 0, "%s: the child exited with %d (see its message above)",
          what, WEXITSTATUS(status));
}

static void close_only(nkv_client *c, uint64_t sub) {
    (void)sub;
    child_closes_at_once(c);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    nkv_client *c = test_connect();
    put_str(c, "f.parent", "p", NULL);
    recorder r;
    recorder_init(&r);
    uint64_t sub = 0;
    CHECK_OK(recorder_subscribe(c, "f", &r));
    sub = r.id;
    CHECK(recorder_wait_for(&r, 0, NKV_EVENT_SYNCED, NULL, WAIT_MS) == 1, "snapshot + SYNCED");

    run_child(child_uses_inherited_client, c, sub, "child using the client");
    run_child(close_only, c, sub, "child closing the client");

    /* the child may not have written through the parent's connection */
    nkv_value *v = NULL;
    CHECK_STATUS(nkv_get(c, "f.child", NKV_NUL, &v), NKV_ERR_NOT_FOUND);

    /* the parent is unaffected: requests and the subscription still work */
    uint64_t rev = 0;
    put_str(c, "f.after", "a", &rev);
    long i = recorder_wait_for(&r, 2, NKV_EVENT_UPDATE, "f.after", WAIT_MS);
    if (i != 2) {
        recorder_dump(&r, "parent after fork");
    }
    CHECK(i == 2, "parent's subscription: f.after is event %ld, expected 2 (nothing between)",
          i);
    CHECK(recorder_get(&r, 2).revision == rev, "wrong revision");
    CHECK_OK(nkv_get(c, "f.after", NKV_NUL, &v));
    nkv_value_free(v);

    nkv_close(c);
    CHECK(recorder_freed(&r) == 1, "free_user_data ran %d times", recorder_freed(&r));
    recorder_check_invariants(&r, "fork parent");
    recorder_destroy(&r);
    printf("test_fork: OK\n");
    return 0;
}
