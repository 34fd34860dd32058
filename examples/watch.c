/*
 * watch.c: print every change under a key prefix until Ctrl-C.
 *
 * Build (from the repository root, after `cargo build --release`):
 *
 *   cc -std=c11 -Wall -Iinclude examples/watch.c -o watch \
 *      -Ltarget/release -Wl,-rpath,"$PWD/target/release" -lnkv
 *
 * or through pkg-config (see nkv.pc.in):
 *
 *   sed -e "s|@PREFIX@|$PWD|" -e "s|@LIBDIR@|$PWD/target/release|" nkv.pc.in > nkv.pc
 *   cc examples/watch.c -o watch $(PKG_CONFIG_PATH=. pkg-config --cflags --libs nkv) \
 *      -Wl,-rpath,"$PWD/target/release"
 *
 * Run:   ./watch net                    (server at $NKV_ADDR, else the default socket)
 *        ./watch net unix:/tmp/nkv.sock
 * Then, in another terminal: nkv put net.eth0.state up
 */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "nkv.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

/* Runs on the client's dispatcher thread, one event at a time, in order,
 * never before nkv_subscribe has returned. The event's memory is only valid
 * during the call. */
static void on_event(void *user_data, const nkv_event *ev) {
    (void)user_data;
    switch (ev->kind) {
    case NKV_EVENT_UPDATE:
        printf("UPDATE %.*s = %.*s (revision %llu", (int)ev->key_len, ev->key, (int)ev->len,
               ev->data ? (const char *)ev->data : "", (unsigned long long)ev->revision);
        if (ev->coalesced > 0) {
            /* we were behind: the latest value, with the skipped updates counted */
            printf(", %llu earlier updates skipped", (unsigned long long)ev->coalesced);
        }
        printf(")\n");
        break;
    case NKV_EVENT_DELETE:
        printf("DELETE %.*s (revision %llu)\n", (int)ev->key_len, ev->key,
               (unsigned long long)ev->revision);
        break;
    case NKV_EVENT_SYNCED:
        printf("SYNCED at revision %llu\n", (unsigned long long)ev->revision);
        break;
    case NKV_EVENT_RESET:
        printf("RESET (a full snapshot follows)\n");
        break;
    case NKV_EVENT_DISCONNECTED:
        printf("DISCONNECTED (reconnecting...)\n");
        break;
    case NKV_EVENT_CLOSED:
        printf("CLOSED: %.*s\n", (int)ev->len, ev->data ? (const char *)ev->data : "");
        break;
    case NKV_EVENT_GROUP:
        /* only for grouped subscriptions, which this program does not ask for */
        break;
    }
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *prefix = argc > 1 ? argv[1] : ""; /* "" watches every key */
    const char *addr = argc > 2 ? argv[2] : NULL; /* NULL: $NKV_ADDR or the default */

    nkv_client *client = NULL;
    nkv_status s = nkv_connect(addr, &client);
    if (s != NKV_OK) {
        char msg[256];
        nkv_last_error(msg, sizeof msg);
        fprintf(stderr, "watch: cannot connect: %s: %s\n", nkv_status_str(s), msg);
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* NKV_NUL: the prefix is a NUL-terminated string */
    s = nkv_subscribe(client, prefix, NKV_NUL, on_event, NULL, NULL, NULL);
    if (s != NKV_OK) {
        char msg[256];
        nkv_last_error(msg, sizeof msg);
        fprintf(stderr, "watch: cannot subscribe to \"%s\": %s: %s\n", prefix,
                nkv_status_str(s), msg);
        nkv_close(client);
        return 1;
    }
    while (!stop) {
        pause(); /* the callbacks run on the dispatcher thread meanwhile */
    }
    nkv_close(client); /* the subscription gets a final CLOSED event before this returns */
    return 0;
}
