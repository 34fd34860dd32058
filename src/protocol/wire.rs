//! Wire constants: the code twin of the tables in `protocol.md`.
//!
//! Every number a peer must agree on lives here, once: the magic, the
//! protocol version, frame type numbers, header offsets, condition and flag
//! values, default limits and STATS names. The codec is written against
//! these names, and `protocol.md` lists the same values; a change to one
//! side without the other is caught by `tests/protocol_examples.rs`, which
//! decodes every hex example of the spec with this code.

/// The four bytes that open every HELLO payload: `"NKV\0"`.
pub const MAGIC: [u8; 4] = *b"NKV\0";

/// The highest (and, for now, only) protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The oldest protocol version this crate speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Size of the length prefix that opens every frame.
pub const LENGTH_SIZE: usize = 4;

/// Offset of the frame type byte within a frame.
pub const TYPE_OFFSET: usize = 4;

/// Offset of the id (request id or subscription id) within a frame.
pub const ID_OFFSET: usize = 5;

/// Offset of the payload within a frame; also the size of the header.
pub const PAYLOAD_OFFSET: usize = 9;

/// Size of the header (length, type, id).
pub const HEADER_SIZE: usize = PAYLOAD_OFFSET;

/// Smallest legal value of the length field: type (1) + id (4).
pub const MIN_FRAME_LENGTH: u32 = 5;

/// The id reserved for errors that belong to no request (a frame that could
/// not be decoded, the handshake timeout). Clients never use it.
pub const CONNECTION_ID: u32 = 0;

/// Default maximum of the length field (bytes after the length prefix): 2 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 2_097_152;

/// Default maximum key length in bytes.
pub const DEFAULT_MAX_KEY: u32 = 1024;

/// Default maximum value length in bytes: 1 MiB.
pub const DEFAULT_MAX_VALUE: u32 = 1_048_576;

/// Largest frame a server accepts before HELLO_OK (the HELLO itself).
pub const PRE_HELLO_MAX_FRAME: u32 = 4096;

/// Default time a client has to send HELLO after connecting, in milliseconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// Bytes of the length field taken by the largest frame carrying one key and
/// one value, beside the key and value bytes themselves (UPDATE: type 1,
/// id 4, revision 8, coalesced 4, key length 2, value length 4).
///
/// A server's limits must satisfy `max_key + max_value + ENTRY_FRAME_OVERHEAD
/// <= max_frame`, so that every stored entry fits in every frame that carries
/// it (PUT, GET_OK, LIST_ITEM, UPDATE).
pub const ENTRY_FRAME_OVERHEAD: u32 = 23;

// Keep the default key limit and the key module's default in step.
const _: () = assert!(DEFAULT_MAX_KEY as usize == crate::key::DEFAULT_MAX_KEY_LEN);
const _: () =
    assert!(DEFAULT_MAX_KEY + DEFAULT_MAX_VALUE + ENTRY_FRAME_OVERHEAD <= DEFAULT_MAX_FRAME);

/// Environment variable that overrides the server address
/// (`unix:PATH` or `tcp:HOST:PORT`).
pub const ADDR_ENV: &str = "NKV_ADDR";

/// File name of the default Unix socket: `$XDG_RUNTIME_DIR/nkv.sock` when
/// `XDG_RUNTIME_DIR` is set, else `/tmp/nkv-$UID/nkv.sock`. That directory
/// is private to its user, and a client checks it before it connects
/// (`protocol.md`, section 1; [`crate::perms`]).
pub const SOCKET_FILE_NAME: &str = "nkv.sock";

/// Frame type numbers (byte at [`TYPE_OFFSET`]).
///
/// Requests are `0x01..=0x7F`; a response has the type of its request with
/// [`RESPONSE_BIT`](frame_type::RESPONSE_BIT) set; events are `0xC0..=0xC4`; ERROR is `0xFF`.
pub mod frame_type {
    /// Set in the type of every response to a request.
    pub const RESPONSE_BIT: u8 = 0x80;

    /// Client → server: open the session.
    pub const HELLO: u8 = 0x01;
    /// Client → server: liveness check.
    pub const PING: u8 = 0x02;
    /// Client → server: read one key.
    pub const GET: u8 = 0x10;
    /// Client → server: write one key.
    pub const PUT: u8 = 0x11;
    /// Client → server: delete one key or a subtree.
    pub const DEL: u8 = 0x12;
    /// Client → server: read every key under a prefix.
    pub const LIST: u8 = 0x13;
    /// Client → server: subscribe to a prefix.
    pub const SUB: u8 = 0x14;
    /// Client → server: end a subscription.
    pub const UNSUB: u8 = 0x15;
    /// Client → server: server counters.
    pub const STATS: u8 = 0x16;
    /// Client → server: compact the store now.
    pub const COMPACT: u8 = 0x17;
    /// Client → server: an atomic multi-key transaction. (0x18 is left
    /// unused: its response type would be LIST_ITEM's 0x98.)
    pub const TXN: u8 = 0x19;

    /// Server → client: answer to HELLO.
    pub const HELLO_OK: u8 = RESPONSE_BIT | HELLO;
    /// Server → client: answer to PING.
    pub const PONG: u8 = RESPONSE_BIT | PING;
    /// Server → client: answer to GET.
    pub const GET_OK: u8 = RESPONSE_BIT | GET;
    /// Server → client: answer to PUT.
    pub const PUT_OK: u8 = RESPONSE_BIT | PUT;
    /// Server → client: answer to DEL.
    pub const DEL_OK: u8 = RESPONSE_BIT | DEL;
    /// Server → client: last frame of the answer to LIST.
    pub const LIST_OK: u8 = RESPONSE_BIT | LIST;
    /// Server → client: answer to SUB.
    pub const SUB_OK: u8 = RESPONSE_BIT | SUB;
    /// Server → client: answer to UNSUB.
    pub const UNSUB_OK: u8 = RESPONSE_BIT | UNSUB;
    /// Server → client: answer to STATS.
    pub const STATS_OK: u8 = RESPONSE_BIT | STATS;
    /// Server → client: answer to COMPACT.
    pub const COMPACT_OK: u8 = RESPONSE_BIT | COMPACT;
    /// Server → client: answer to TXN.
    pub const TXN_OK: u8 = RESPONSE_BIT | TXN;
    /// Server → client: one entry of a LIST answer, before LIST_OK.
    pub const LIST_ITEM: u8 = 0x98;

    /// Event: a key covered by the subscription has this value.
    pub const UPDATE: u8 = 0xC0;
    /// Event: a key covered by the subscription was deleted.
    pub const DELETE: u8 = 0xC1;
    /// Event: the snapshot (or resume) is complete.
    pub const SYNCED: u8 = 0xC2;
    /// Event: forget what you hold for this subscription; a snapshot follows.
    pub const RESET: u8 = 0xC3;
    /// Event: the server ended the subscription.
    pub const CLOSED: u8 = 0xC4;
    /// Event (grouped subscriptions only): the next `count` events belong
    /// together and are to be applied at once.
    pub const GROUP: u8 = 0xC5;

    /// Server → client: a request (or the connection) failed.
    pub const ERROR: u8 = 0xFF;
}

/// Values of the `condition` byte of PUT and DEL.
pub mod condition {
    /// Unconditional write.
    pub const NONE: u8 = 0;
    /// Write only if the key does not exist.
    pub const MUST_NOT_EXIST: u8 = 1;
    /// Write only if the key's revision equals `expected_revision`.
    pub const REVISION_EQUALS: u8 = 2;
}

/// Bits of the `flags` byte of DEL.
pub mod del_flags {
    /// Delete the key and every key below it, atomically.
    pub const PREFIX: u8 = 0x01;
    /// Every bit that has a meaning; the others must be zero.
    pub const ALL: u8 = PREFIX;
}

/// Bits of the `flags` byte of SUB.
pub mod sub_flags {
    /// Resume: only what changed after `since` is sent as the snapshot.
    pub const RESUME: u8 = 0x01;
    /// Grouped: runs of live events that belong together (one
    /// transaction, one prefix delete) are announced by a GROUP event.
    pub const GROUPED: u8 = 0x02;
    /// Every bit that has a meaning; the others must be zero.
    pub const ALL: u8 = RESUME | GROUPED;
}

/// Bits of the optional `flags` byte at the end of PUT.
pub mod put_flags {
    /// The key belongs to the connection that wrote it and is deleted when
    /// that connection ends (after the grace period, if any).
    pub const EPHEMERAL: u8 = 0x01;
    /// Every bit that has a meaning; the others must be zero.
    pub const ALL: u8 = EPHEMERAL;
}

/// Longest grace period an ephemeral PUT may ask for: 10 minutes.
pub const MAX_EPHEMERAL_GRACE_MS: u32 = 600_000;

/// Kinds of a TXN condition.
pub mod txn_condition {
    /// The key must not exist.
    pub const ABSENT: u8 = 1;
    /// The key must exist.
    pub const PRESENT: u8 = 2;
    /// The key must exist with exactly `revision`.
    pub const REVISION_EQUALS: u8 = 3;
}

/// Kinds of a TXN operation.
pub mod txn_op {
    /// Set a key (a value follows the key).
    pub const PUT: u8 = 1;
    /// Delete a key (no error if absent).
    pub const DELETE: u8 = 2;
    /// Delete a key and every key below it.
    pub const DELETE_PREFIX: u8 = 3;
}

/// Most conditions one TXN may carry.
pub const MAX_TXN_CONDITIONS: usize = 256;

/// Most operations one TXN may carry.
pub const MAX_TXN_OPS: usize = 1024;

/// Names of the counters in STATS_OK (per-subscription names are built with
/// [`sub_pending`](stats::sub_pending) and [`sub_coalesced`](stats::sub_coalesced)).
pub mod stats {
    /// Number of live keys.
    pub const KEYS: &str = "keys";
    /// Bytes of live keys and values.
    pub const BYTES: &str = "bytes";
    /// Current store revision.
    pub const REVISION: &str = "revision";
    /// Open client connections.
    pub const CONNECTIONS: &str = "connections";
    /// Active subscriptions, all connections.
    pub const SUBSCRIPTIONS: &str = "subscriptions";
    /// GET requests served since start.
    pub const OPS_GET: &str = "ops.get";
    /// PUT requests served since start.
    pub const OPS_PUT: &str = "ops.put";
    /// DEL requests served since start.
    pub const OPS_DEL: &str = "ops.del";
    /// LIST requests served since start.
    pub const OPS_LIST: &str = "ops.list";
    /// SUB requests served since start.
    pub const OPS_SUB: &str = "ops.sub";
    /// TXN requests applied since start.
    pub const OPS_TXN: &str = "ops.txn";
    /// Live keys kept in memory only (volatile and ephemeral).
    pub const MEMORY_KEYS: &str = "memory.keys";
    /// Bytes of the keys and values kept in memory only.
    pub const MEMORY_BYTES: &str = "memory.bytes";
    /// Ephemeral keys, orphans in their grace period included.
    pub const EPHEMERAL_KEYS: &str = "ephemeral.keys";
    /// Number of fsyncs since start.
    pub const FSYNC_COUNT: &str = "fsync.count";
    /// Duration of the last fsync, microseconds.
    pub const FSYNC_LAST_US: &str = "fsync.last_us";
    /// Longest fsync since start, microseconds.
    pub const FSYNC_MAX_US: &str = "fsync.max_us";
    /// Subscriptions left out of this answer because it would not fit.
    pub const SUB_OMITTED: &str = "sub.omitted";
    /// The tombstone floor: a resume below it gets RESET.
    pub const TOMBSTONE_FLOOR: &str = "tombstone_floor";
    /// Bytes of the store's data files.
    pub const DISK_BYTES: &str = "disk.bytes";
    /// Bytes of the data files a compaction would free.
    pub const DISK_DEAD_BYTES: &str = "disk.dead_bytes";
    /// Free bytes on the data directory's filesystem.
    pub const DISK_FREE_BYTES: &str = "disk.free_bytes";
    /// Compactions since the server started.
    pub const COMPACTION_COUNT: &str = "compaction.count";
    /// Why automatic compaction is on hold: 0 it is not, 1 not enough free
    /// space, 2 the last attempt failed.
    pub const COMPACTION_BLOCKED: &str = "compaction.blocked";

    /// Name of the pending-events counter of subscription `id` on connection `conn`.
    pub fn sub_pending(conn: u64, id: u32) -> String {
        format!("sub.{conn}.{id}.pending")
    }

    /// Name of the uid of the caller on connection `conn` (Unix sockets).
    pub fn conn_uid(conn: u64) -> String {
        format!("conn.{conn}.uid")
    }

    /// Name of the pid of the caller on connection `conn` (Unix sockets).
    pub fn conn_pid(conn: u64) -> String {
        format!("conn.{conn}.pid")
    }

    /// Name carrying the process name of the caller on connection `conn`
    /// (its value is the pid): `conn.<conn>.process.<name>`.
    pub fn conn_process(conn: u64, name: &str) -> String {
        format!("conn.{conn}.process.{name}")
    }

    /// Name carrying the token name of a TCP caller (value 1).
    pub fn conn_token(conn: u64, name: &str) -> String {
        format!("conn.{conn}.token.{name}")
    }

    /// Name of the coalesced-events counter of subscription `id` on connection `conn`.
    pub fn sub_coalesced(conn: u64, id: u32) -> String {
        format!("sub.{conn}.{id}.coalesced")
    }
}

/// Offsets of the fixed fields of each frame, counted from the start of the
/// frame (the first payload byte is at [`PAYLOAD_OFFSET`]): the twin of the
/// byte tables of `protocol.md`. Only fields before the first
/// variable-length field have a fixed offset; the variable-length field
/// named last starts there.
pub mod layout {
    macro_rules! offsets {
        ($(#[$doc:meta] $frame:ident { $($(#[$fdoc:meta])* $field:ident = $off:expr),* $(,)? })*) => {
            $(
                #[$doc]
                pub mod $frame {
                    $($(#[$fdoc])* pub const $field: usize = $off;)*
                }
            )*
        };
    }

    offsets! {
        /// HELLO (0x01).
        hello {
            /// `magic`, 4 bytes.
            MAGIC = 9,
            /// `version: u16`.
            VERSION = 13,
            /// `client_name: str16`.
            CLIENT_NAME = 15,
        }
        /// HELLO_OK (0x81).
        hello_ok {
            /// `version: u16`.
            VERSION = 9,
            /// `max_frame: u32`.
            MAX_FRAME = 11,
            /// `max_key: u32`.
            MAX_KEY = 15,
            /// `max_value: u32`.
            MAX_VALUE = 19,
            /// `server_name: str16`.
            SERVER_NAME = 23,
        }
        /// GET (0x10).
        get {
            /// `key: str16`.
            KEY = 9,
        }
        /// GET_OK (0x90).
        get_ok {
            /// `revision: u64`.
            REVISION = 9,
            /// `value: bytes32`.
            VALUE = 17,
        }
        /// PUT (0x11).
        put {
            /// `condition: u8`.
            CONDITION = 9,
            /// `expected_revision: u64`.
            EXPECTED_REVISION = 10,
            /// `key: str16`, then `value: bytes32`.
            KEY = 18,
        }
        /// PUT_OK (0x91).
        put_ok {
            /// `revision: u64`.
            REVISION = 9,
        }
        /// DEL (0x12).
        del {
            /// `flags: u8`.
            FLAGS = 9,
            /// `condition: u8`.
            CONDITION = 10,
            /// `expected_revision: u64`.
            EXPECTED_REVISION = 11,
            /// `key: str16`.
            KEY = 19,
        }
        /// DEL_OK (0x92).
        del_ok {
            /// `revision: u64`.
            REVISION = 9,
            /// `deleted: u32`.
            DELETED = 17,
        }
        /// LIST (0x13).
        list {
            /// `prefix: str16`.
            PREFIX = 9,
        }
        /// LIST_ITEM (0x98).
        list_item {
            /// `revision: u64`.
            REVISION = 9,
            /// `key: str16`, then `value: bytes32`.
            KEY = 17,
        }
        /// LIST_OK (0x93).
        list_ok {
            /// `revision: u64`.
            REVISION = 9,
            /// `count: u32`.
            COUNT = 17,
        }
        /// SUB (0x14).
        sub {
            /// `flags: u8`.
            FLAGS = 9,
            /// `since: u64`.
            SINCE = 10,
            /// `prefix: str16`.
            PREFIX = 18,
        }
        /// UNSUB (0x15).
        unsub {
            /// `subscription: u32`.
            SUBSCRIPTION = 9,
        }
        /// STATS_OK (0x96).
        stats_ok {
            /// `count: u16`.
            COUNT = 9,
            /// The first `(name: str16, value: u64)` entry.
            ENTRIES = 11,
        }
        /// ERROR (0xFF).
        error {
            /// `code: u16`.
            CODE = 9,
            /// `message: str16`, then `current_revision: u64` for CONDITION_FAILED.
            MESSAGE = 11,
        }
        /// UPDATE (0xC0) and DELETE (0xC1).
        update {
            /// `revision: u64`.
            REVISION = 9,
            /// `coalesced: u32`.
            COALESCED = 17,
            /// `key: str16` (UPDATE: then `value: bytes32`).
            KEY = 21,
        }
        /// SYNCED (0xC2).
        synced {
            /// `revision: u64`.
            REVISION = 9,
        }
        /// CLOSED (0xC4).
        closed {
            /// `code: u16`.
            CODE = 9,
            /// `message: str16`.
            MESSAGE = 11,
        }
    }
}
