// header_check.cpp: nkv.h is usable from C++17 (included twice, linked).
//
//   g++ -std=c++17 -Wall -Wextra -Werror -Iinclude tests/cpp/header_check.cpp
//       -Ltarget/debug -Wl,-rpath,$PWD/target/debug -lnkv
//
// Run by tests/c_api.rs with NKV_ADDR set to a live server.
#include "nkv.h"
#include "nkv.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

struct Seen {
    uint64_t id = 0;  // nkv_subscribe's out_subscription
    std::atomic<int> synced{0};
    std::atomic<int> wrong_id{0};
    std::atomic<int> closed{0};
    std::atomic<int> freed{0};
};

// A C++ lambda without captures converts to the C callback type.
const nkv_callback count_events = [](void *user_data, const nkv_event *event) {
    Seen *seen = static_cast<Seen *>(user_data);
    if (event->subscription != seen->id) {
        ++seen->wrong_id;
    }
    if (event->kind == NKV_EVENT_SYNCED) {
        ++seen->synced;
    } else if (event->kind == NKV_EVENT_CLOSED) {
        ++seen->closed;
    }
};

void free_seen(void *user_data) {
    ++static_cast<Seen *>(user_data)->freed;
}

int fail(const char *what, nkv_status s) {
    std::fprintf(stderr, "header_check: %s: %s\n", what, nkv_status_str(s));
    return 1;
}

int fail(const char *what) {
    std::fprintf(stderr, "header_check: %s\n", what);
    return 1;
}

}  // namespace

int main() {
    static_assert(NKV_VERSION_MAJOR >= 0, "version macros");
    static_assert(NKV_ABI_VERSION >= 0, "ABI macro");
    static_assert(sizeof(NKV_NUL) == sizeof(size_t) && NKV_NUL == static_cast<size_t>(-1),
                  "NKV_NUL");
    if (std::string(nkv_version()) != NKV_VERSION_STRING) return fail("version mismatch");
    if (nkv_abi_version() != NKV_ABI_VERSION) return fail("ABI version mismatch");
    if (std::strcmp(nkv_status_str(NKV_ERR_NOT_FOUND), "NKV_ERR_NOT_FOUND") != 0 ||
        std::strcmp(nkv_status_str(17), "NKV_ERR_UNKNOWN") != 0) {
        return fail("nkv_status_str");
    }

    nkv_options *options = nkv_options_new();
    if (options == nullptr) return fail("nkv_options_new");
    nkv_status s = nkv_options_set_name(options, "header_check (C++)");
    if (s != NKV_OK) return fail("options", s);
    nkv_client *client = nullptr;
    s = nkv_connect_opts(std::getenv("NKV_ADDR"), options, &client);
    nkv_options_free(options);
    if (s != NKV_OK) return fail("connect", s);
    if (nkv_state(client) != NKV_STATE_CONNECTED) return fail("state");

    const std::string value = "from C++";
    const std::string key = "cpp.key";
    uint64_t rev = 0;
    s = nkv_put(client, key.data(), key.size(), value.data(), value.size(), &rev);
    if (s != NKV_OK) return fail("put", s);

    nkv_value *got = nullptr;
    s = nkv_get(client, "cpp.key", NKV_NUL, &got);
    if (s != NKV_OK) return fail("get", s);
    const bool same = std::string(reinterpret_cast<const char *>(got->data), got->len) == value &&
                      got->revision == rev;
    nkv_value_free(got);
    if (!same) return fail("get returned something else");

    nkv_entries *entries = nullptr;
    s = nkv_list(client, "cpp", NKV_NUL, &entries);
    if (s != NKV_OK) return fail("list", s);
    size_t key_len = 0;
    const char *first = nkv_entries_key(entries, 0, &key_len);
    const bool listed = nkv_entries_count(entries) == 1 && first != nullptr &&
                        std::string(first, key_len) == key &&
                        nkv_entries_revision(entries, 0) == rev;
    nkv_entries_free(entries);
    if (!listed) return fail("list returned something else");

    // The opaque counters are `nkv_stats_list` (the function is `nkv_stats`).
    nkv_stats_list *stats = nullptr;
    s = nkv_stats(client, &stats);
    if (s != NKV_OK) return fail("stats", s);
    uint64_t keys = 0;
    s = nkv_stats_find(stats, "keys", &keys);
    nkv_stats_free(stats);
    if (s != NKV_OK || keys != 1) return fail("stats keys", s);

    Seen seen;
    s = nkv_subscribe(client, "cpp", NKV_NUL, count_events, &seen, free_seen, &seen.id);
    if (s != NKV_OK) return fail("subscribe", s);
    for (int i = 0; i < 2000 && seen.synced.load() == 0; i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (seen.synced.load() != 1) return fail("no SYNCED");
    s = nkv_unsubscribe(client, seen.id);
    if (s != NKV_OK) return fail("unsubscribe", s);
    if (seen.freed.load() != 1 || seen.wrong_id.load() != 0) {
        return fail("free_user_data or the subscription id");
    }

    Seen until_close;
    s = nkv_subscribe(client, "cpp", NKV_NUL, count_events, &until_close, free_seen,
                      &until_close.id);
    if (s != NKV_OK) return fail("subscribe", s);
    nkv_close(client);
    if (until_close.closed.load() != 1 || until_close.freed.load() != 1) {
        return fail("nkv_close did not end the subscription before returning");
    }
    std::printf("header_check: OK\n");
    return 0;
}
