/* Tokens from C: nkv_options_set_token and nkv_options_set_token_file, over
 * TCP to a server with a token file (tests/c_api.rs starts it). */
#include "nkv_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_get(const char *addr, nkv_options *o) {
    nkv_client *c = NULL;
    CHECK_OK(nkv_connect_opts(addr, o, &c));
    CHECK_OK(nkv_put(c, "tok.a", NKV_NUL, "1", 1, NULL));
    nkv_value *v = NULL;
    CHECK_OK(nkv_get(c, "tok.a", NKV_NUL, &v));
    CHECK(v->len == 1 && v->data[0] == '1', "read back %zu bytes", v->len);
    nkv_value_free(v);
    nkv_close(c);
}

int main(void) {
    const char *addr = getenv("NKV_TEST_TCP_ADDR");
    const char *secret = getenv("NKV_TEST_TOKEN");
    const char *file = getenv("NKV_TEST_TOKEN_FILE");
    CHECK(addr && secret && file, "NKV_TEST_TCP_ADDR, NKV_TEST_TOKEN, NKV_TEST_TOKEN_FILE");

    nkv_options *o = nkv_options_new();
    CHECK(o != NULL, "nkv_options_new");
    CHECK_OK(nkv_options_set_reconnect(o, 0, 50, 2000));
    nkv_client *c = NULL;
    /* No token, then a wrong one: refused at HELLO, no handle. */
    CHECK_STATUS(nkv_connect_opts(addr, o, &c), NKV_ERR_UNAUTHORIZED);
    CHECK(c == NULL, "a handle after a refusal");
    CHECK_OK(nkv_options_set_token(o, "00000000000000000000000000000000"));
    CHECK_STATUS(nkv_connect_opts(addr, o, &c), NKV_ERR_UNAUTHORIZED);
    /* The right one, given directly, then read from the file. */
    CHECK_OK(nkv_options_set_token(o, secret));
    put_get(addr, o);
    CHECK_OK(nkv_options_set_token(o, NULL));
    CHECK_OK(nkv_options_set_token_file(o, file));
    put_get(addr, o);
    /* A file that is not there is the caller's mistake. */
    CHECK_STATUS(nkv_options_set_token_file(o, "/nonexistent/nkv-token"),
                 NKV_ERR_INVALID_ARGUMENT);
    nkv_options_free(o);
    printf("test_token: OK\n");
    return 0;
}
