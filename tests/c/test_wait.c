/* nkv_wait: a start-up gate. Waits for a key to appear, for a value, for
 * absence; times out; refuses unknown states and manual dispatch. */
#include "nkv_test.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void *put_later(void *arg) {
    nkv_client *c = arg;
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    CHECK_OK(nkv_put(c, "svc.netd.alive", NKV_NUL, "yes", 3, NULL));
    return NULL;
}

int main(void) {
    nkv_client *c = NULL;
    CHECK_OK(nkv_connect(test_addr(), &c));
    /* Not there yet: times out. */
    CHECK_STATUS(nkv_wait(c, "svc.netd.alive", NKV_NUL, NKV_WAIT_PRESENT, NULL, 0, 100),
                 NKV_ERR_TIMEOUT);
    /* Appears later (written by another thread on the same client). */
    pthread_t writer;
    CHECK(pthread_create(&writer, NULL, put_later, c) == 0, "pthread_create");
    CHECK_OK(nkv_wait(c, "svc.netd.alive", NKV_NUL, NKV_WAIT_VALUE, "yes", 3, 10000));
    CHECK(pthread_join(writer, NULL) == 0, "pthread_join");
    /* Already true: at once. A different value: times out. */
    CHECK_OK(nkv_wait(c, "svc.netd.alive", NKV_NUL, NKV_WAIT_PRESENT, NULL, 0, -1));
    CHECK_STATUS(nkv_wait(c, "svc.netd.alive", NKV_NUL, NKV_WAIT_VALUE, "no", 2, 100),
                 NKV_ERR_TIMEOUT);
    CHECK_OK(nkv_delete(c, "svc.netd.alive", NKV_NUL, NULL));
    CHECK_OK(nkv_wait(c, "svc.netd.alive", NKV_NUL, NKV_WAIT_ABSENT, NULL, 0, 1000));
    /* Mistakes. */
    CHECK_STATUS(nkv_wait(c, "svc.netd.alive", NKV_NUL, 7, NULL, 0, 10),
                 NKV_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(nkv_wait(c, "bad..key", NKV_NUL, NKV_WAIT_PRESENT, NULL, 0, 10),
                 NKV_ERR_INVALID_KEY);
    nkv_close(c);

    nkv_options *o = nkv_options_new();
    CHECK_OK(nkv_options_set_dispatch(o, NKV_DISPATCH_MANUAL));
    CHECK_OK(nkv_connect_opts(test_addr(), o, &c));
    nkv_options_free(o);
    CHECK_STATUS(nkv_wait(c, "x", NKV_NUL, NKV_WAIT_PRESENT, NULL, 0, 10),
                 NKV_ERR_INVALID_ARGUMENT);
    nkv_close(c);
    printf("test_wait: OK\n");
    return 0;
}
