// header_check.cpp: nkv.h is usable from C++17 (included twice, linked).
//
//   g++ -std=c++17 -Wall -Wextra -Werror -Iinclude tests/cpp/header_check.cpp
//       -Ltarget/debug -Wl,-rpath,$PWD/target/debug -lnkv
//
// Run by tests/c_api.rs with NKV_ADDR set to a live server.
#include "nkv.h"
#include "nkv.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

// A C++ lambda without captures converts to the C callback type.
const nkv_callback count_events = [](void *user_data, const nkv_event *event) {
    if (event->kind == NKV_EVENT_SYNCED) {
        ++*static_cast<int *>(user_data);
    }
};

int fail(const char *what, nkv_status s) {
    std::fprintf(stderr, "header_check: %s: %s\n", what, nkv_status_str(s));
    return 1;
}

}  // namespace

int main() {
    static_assert(NKV_VERSION_MAJOR >= 0, "version macros");
    if (std::string(nkv_version()) != NKV_VERSION_STRING) {
        std::fprintf(stderr, "header_check: version mismatch\n");
        return 1;
    }
    if (std::strcmp(nkv_status_str(NKV_ERR_NOT_FOUND), "NKV_ERR_NOT_FOUND") != 0) {
        std::fprintf(stderr, "header_check: nkv_status_str\n");
        return 1;
    }

    nkv_client *client = nullptr;
    nkv_status s = nkv_connect(std::getenv("NKV_ADDR"), &client);
    if (s != NKV_OK) return fail("connect", s);

    const std::string value = "from C++";
    uint64_t rev = 0;
    s = nkv_put(client, "cpp.key", reinterpret_cast<const uint8_t *>(value.data()), value.size(),
                &rev);
    if (s != NKV_OK) return fail("put", s);

    nkv_value *got = nullptr;
    s = nkv_get(client, "cpp.key", &got);
    if (s != NKV_OK) return fail("get", s);
    const bool same = std::string(reinterpret_cast<const char *>(got->data), got->len) == value &&
                      got->revision == rev;
    nkv_value_free(got);
    if (!same) {
        std::fprintf(stderr, "header_check: get returned something else\n");
        return 1;
    }

    int synced = 0;
    uint64_t sub = 0;
    s = nkv_subscribe(client, "cpp", count_events, &synced, nullptr, &sub);
    if (s != NKV_OK) return fail("subscribe", s);
    s = nkv_unsubscribe(client, sub);
    if (s != NKV_OK) return fail("unsubscribe", s);

    nkv_close(client);
    std::printf("header_check: OK\n");
    return 0;
}
