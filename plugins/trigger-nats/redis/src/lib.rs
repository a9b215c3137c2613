//! The Redis key-value store trigger-nats runs its components against, in
//! place of Spin 4.0.2's (see `docs/decisions.md`, "Spin 4.0.2's Redis
//! store, as measured"). Spin-independent: the plugin adapts it to Spin's
//! `Store`/`Cas` traits; the behaviour is tested here against a real
//! `redis-server`.
//!
//! What it keeps that Spin's does not:
//! - **Reconnection within a second** of Redis coming back: the connection
//!   manager waits at most [`RECONNECT_MAX_DELAY`] between attempts (Spin's
//!   default waits 60 s), and a call gives up after [`RESPONSE_TIMEOUT`]
//!   instead of waiting on a server that does not answer.
//! - **`get-many` is one `MGET`**, `set-many` one `MSET`, `delete-many` one
//!   `DEL`.
//! - **Compare-and-swap answers truthfully in one round trip**: the swap is
//!   a Lua script that writes only when the key still holds the value
//!   `current` read (or is still absent), atomically on the server. No
//!   connection per swap, no `WATCH` to leak.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use tokio::sync::OnceCell;

/// The longest wait between two reconnection attempts, in milliseconds
/// (jitter may add up to as much again).
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(250);
/// Attempts per reconnection before the waiting calls fail; the next call
/// starts a new round.
pub const RECONNECT_ATTEMPTS: usize = 4;
/// A call on a connection that does not answer fails after this long:
/// below the writer's handler deadline (5 s; the trigger's default is
/// 30 s), so a frozen Redis ends in an error the component handles, not
/// in a cancelled call.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection attempt fails after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A Redis that has just started answers `LOADING` until its data is in
/// memory: a call waits for it, asking again this often, for at most
/// [`LOADING_WAIT`]. Failing instead would make the writer park events in
/// the outbox just as Redis comes back.
const LOADING_POLL: Duration = Duration::from_millis(50);
/// The longest a call waits for Redis to finish loading.
pub const LOADING_WAIT: Duration = Duration::from_millis(1_500);
/// Keys asked per `SCAN` step.
const SCAN_COUNT: usize = 1_000;

/// Writes `ARGV[3]` to `KEYS[1]` only if the key still holds `ARGV[2]`
/// (`ARGV[1]` = `1`) or is still absent (`ARGV[1]` = `0`). Returns 1 when
/// written, 0 when the key had changed.
const SWAP_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
";

/// A failed store call: what Redis or the connection said, with the server's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// One Redis database (the URL's `/N`), opened lazily: a store whose Redis
/// is down at start-up connects on the first call after it is back.
pub struct RedisKv {
    client: Client,
    address: String,
    connection: OnceCell<ConnectionManager>,
    swap: Script,
}

impl RedisKv {
    /// Checks the URL (`redis://`, `rediss://` with the `tls` feature,
    /// `redis+unix://`); connects on first use.
    pub fn new(url: &str) -> Result<Self, Error> {
        let client = Client::open(url).map_err(|e| Error(format!("invalid Redis URL: {e}")))?;
        let info = client.get_connection_info();
        let address = format!("Redis at {}, database {}", info.addr, info.redis.db);
        Ok(Self {
            client,
            address,
            connection: OnceCell::new(),
            swap: Script::new(SWAP_SCRIPT),
        })
    }

    /// "Redis at HOST:PORT, database N", for start-up summaries and errors.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn fail(&self, error: redis::RedisError) -> Error {
        Error(format!("{}: {error}", self.address))
    }

    async fn connection(&self) -> Result<ConnectionManager, Error> {
        self.connection
            .get_or_try_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_max_delay(
                        u64::try_from(RECONNECT_MAX_DELAY.as_millis()).unwrap_or(u64::MAX),
                    )
                    .set_number_of_retries(RECONNECT_ATTEMPTS)
                    .set_response_timeout(RESPONSE_TIMEOUT)
                    .set_connection_timeout(CONNECT_TIMEOUT);
                self.client.get_connection_manager_with_config(config)
            })
            .await
            .cloned()
            .map_err(|e| self.fail(e))
    }

    /// Runs a command that may run twice: after the connection turned out
    /// dead (the first call after Redis restarted finds it so), it is sent
    /// once more, on the connection made meanwhile.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        let mut connection = self.connection().await?;
        match run(&mut connection, cmd).await {
            Err(e) if e.is_connection_dropped() => run(&mut connection, cmd).await,
            result => result,
        }
        .map_err(|e| self.fail(e))
    }

    /// Runs a command once (besides waiting out `LOADING`, when nothing ran).
    async fn query_once<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        let mut connection = self.connection().await?;
        run(&mut connection, cmd).await.map_err(|e| self.fail(e))
    }

    /// Connects (if not yet) and checks that Redis answers.
    pub async fn ping(&self) -> Result<(), Error> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }

    /// The value under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    /// Writes `value` under `key`.
    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.query(redis::cmd("SET").arg(key).arg(value)).await
    }

    /// Removes `key` (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.query(redis::cmd("DEL").arg(key)).await
    }

    /// Whether `key` holds a value.
    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        self.query(redis::cmd("EXISTS").arg(key)).await
    }

    /// The values under `keys`, in the same order, `None` where absent: one `MGET`.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.query(redis::cmd("MGET").arg(keys)).await
    }

    /// Writes every pair: one `MSET` (atomic on the server).
    pub async fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), Error> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (key, value) in pairs {
            cmd.arg(key).arg(value);
        }
        self.query(&cmd).await
    }

    /// Removes every key: one `DEL`.
    pub async fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        self.query(redis::cmd("DEL").arg(keys)).await
    }

    /// Adds `delta` to the integer under `key` (absent counts as 0) and
    /// returns the new value.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        // Not idempotent: never sent twice.
        self.query_once(redis::cmd("INCRBY").arg(key).arg(delta))
            .await
    }

    /// The next page of keys: `SCAN` from `cursor` (0 to start); the
    /// returned cursor is 0 after the last page. A key may appear twice
    /// across pages when the database changes meanwhile (Redis's `SCAN`
    /// guarantee), never zero times if it was there throughout.
    pub async fn scan(&self, cursor: u64) -> Result<(u64, Vec<String>), Error> {
        self.query(redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(SCAN_COUNT))
            .await
    }

    /// Writes `value` only if `key` still holds `expected` (`None`: is
    /// still absent), atomically. `Ok(false)`: the key had changed and
    /// nothing was written.
    pub async fn swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, Error> {
        let mut connection = self.connection().await?;
        let deadline = tokio::time::Instant::now() + LOADING_WAIT;
        let mut invocation = self.swap.key(key);
        invocation
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(value);
        loop {
            match invocation.invoke_async::<i64>(&mut connection).await {
                Err(e) if loading(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(LOADING_POLL).await;
                }
                result => return result.map(|written| written == 1).map_err(|e| self.fail(e)),
            }
        }
    }
}

/// Runs `cmd`, asking again while Redis answers `LOADING` (for at most
/// [`LOADING_WAIT`]).
async fn run<T: redis::FromRedisValue>(
    connection: &mut ConnectionManager,
    cmd: &redis::Cmd,
) -> Result<T, redis::RedisError> {
    let deadline = tokio::time::Instant::now() + LOADING_WAIT;
    loop {
        match cmd.query_async(connection).await {
            Err(e) if loading(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(LOADING_POLL).await;
            }
            result => return result,
        }
    }
}

/// Redis answered `LOADING`: it has just started and its data is not in
/// memory yet. Nothing was run.
fn loading(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::BusyLoadingError
}
