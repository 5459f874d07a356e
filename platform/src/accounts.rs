//! The people of one platform: accounts with roles, Argon2id passwords,
//! lock-out after repeated failures, browser sessions and per-account API
//! tokens. Everything lives in the platform's store, so accounts and
//! sessions survive a restart; nothing here knows about HTTP.

use std::collections::BTreeSet;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use certs::AreaCode;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What an account may do. One person may hold several roles.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// 拟稿: drafts broadcasts.
    Drafter,
    /// 审核: approves or rejects drafts (never their own).
    Approver,
    /// 村/镇文书: drafts and issues daily notices in its own area, requests emergencies.
    Clerk,
    /// 运维: terminals, commands, certificates, revocation, local silence.
    Maintainer,
    /// 审计: reads the audit trail.
    Auditor,
    /// 管理员: accounts.
    Admin,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Drafter,
        Role::Approver,
        Role::Clerk,
        Role::Maintainer,
        Role::Auditor,
        Role::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Drafter => "drafter",
            Role::Approver => "approver",
            Role::Clerk => "clerk",
            Role::Maintainer => "maintainer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How accounts and sessions behave (the `[accounts]` table of the config).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccountPolicy {
    /// Shortest password accepted, in characters.
    pub min_password_chars: usize,
    /// Failed logins in a row that lock an account.
    pub lockout_failures: u32,
    /// How long a lock-out lasts.
    pub lockout_minutes: i64,
    /// A session unused this long ends.
    pub session_idle_minutes: i64,
    /// A session ends this long after login, used or not.
    pub session_max_hours: i64,
}

impl Default for AccountPolicy {
    fn default() -> Self {
        AccountPolicy {
            min_password_chars: 12,
            lockout_failures: 5,
            lockout_minutes: 15,
            session_idle_minutes: 30,
            session_max_hours: 12,
        }
    }
}

impl AccountPolicy {
    pub fn check(&self) -> Result<(), String> {
        if !(8..=128).contains(&self.min_password_chars) {
            return Err(format!(
                "accounts.min_password_chars: {} is outside 8..=128",
                self.min_password_chars
            ));
        }
        if !(1..=100).contains(&self.lockout_failures) {
            return Err("accounts.lockout_failures: must be 1..=100".into());
        }
        if !(1..=10_080).contains(&self.lockout_minutes) {
            return Err("accounts.lockout_minutes: must be 1..=10080".into());
        }
        if !(1..=1_440).contains(&self.session_idle_minutes) {
            return Err("accounts.session_idle_minutes: must be 1..=1440".into());
        }
        if !(1..=168).contains(&self.session_max_hours) {
            return Err("accounts.session_max_hours: must be 1..=168".into());
        }
        Ok(())
    }
}

/// Longest password accepted (bytes): hashing cost must not depend on the
/// attacker's input size.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Account names: 1 to 32 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub const MAX_NAME_BYTES: usize = protocol::request::MAX_ACCOUNT_BYTES;
/// Display names (e.g. 张三), in bytes (10 Chinese characters fit in 32).
pub const MAX_DISPLAY_NAME_BYTES: usize = 96;
/// Tokens per account.
pub const MAX_TOKENS_PER_ACCOUNT: usize = 16;
/// Sessions held at once per account (the oldest ends first).
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 16;
/// A locked-by-admin account stays locked until unlocked.
pub const LOCKED_FOR_GOOD: i64 = i64::MAX;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Account {
    pub name: String,
    pub display_name: String,
    pub roles: BTreeSet<Role>,
    /// Areas this account may address; empty: the platform's whole scope.
    #[serde(with = "area_codes")]
    pub areas: Vec<AreaCode>,
    /// Argon2id, PHC string.
    password_hash: String,
    pub created_ms: i64,
    /// Failed logins since the last success.
    pub failures: u32,
    /// Locked until then (unix ms); `LOCKED_FOR_GOOD` when an admin locked it.
    pub locked_until_ms: Option<i64>,
}

impl Account {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn is_locked(&self, now_ms: i64) -> bool {
        self.locked_until_ms.is_some_and(|t| now_ms < t)
    }

    /// The areas this account may address, within `scope`.
    pub fn reach(&self, scope: &[AreaCode]) -> Vec<AreaCode> {
        if self.areas.is_empty() {
            scope.to_vec()
        } else {
            self.areas.clone()
        }
    }
}

/// Area codes stored as their numbers.
mod area_codes {
    use certs::AreaCode;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[AreaCode], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|a| a.as_u64())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AreaCode>, D::Error> {
        Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(|n| AreaCode::from_u64(n).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// What the API shows of an account (never the hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub name: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    /// Area codes; empty: the platform's whole scope.
    pub areas: Vec<String>,
    pub created_ms: i64,
    pub failures: u32,
    /// Locked until (unix ms), if locked now.
    pub locked_until_ms: Option<i64>,
    pub tokens: Vec<TokenView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    /// The token's public id (its first part); the secret is shown once.
    pub id: String,
    pub label: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    account: String,
    label: String,
    created_ms: i64,
    /// SHA-256 of the secret part (a token is 32 random bytes: no need
    /// for a slow hash).
    secret_sha256: [u8; 32],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub account: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    /// Sent back in `X-CSRF-Token` with every state-changing request.
    pub csrf: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("store: {0}")]
    Store(#[from] sled::Error),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("an account named {0:?} exists already")]
    Exists(String),
    #[error("no account named {0:?}")]
    NoSuchAccount(String),
    #[error("no token {0:?}")]
    NoSuchToken(String),
    #[error("the last admin cannot be removed, locked or lose the admin role")]
    LastAdmin,
    #[error("password hashing: {0}")]
    Hash(String),
}

fn invalid(field: &'static str, message: impl Into<String>) -> AccountError {
    AccountError::Invalid {
        field,
        message: message.into(),
    }
}

/// Why a login failed. The API says only "wrong name or password" or
/// "locked" (never which of name and password was wrong).
#[derive(Debug, Clone, PartialEq)]
pub enum LoginRefused {
    WrongCredentials,
    /// Locked until (unix ms); `just_locked` when this attempt locked it.
    Locked {
        until_ms: i64,
        just_locked: bool,
    },
}

/// A caller the store recognised: by a session or a token.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub account: Account,
    /// The session's CSRF token; None for a bearer token.
    pub csrf: Option<String>,
    pub session: Option<[u8; 32]>,
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Tokens read `ebs1.<16 hex id>.<64 hex secret>`.
fn parse_token(token: &str) -> Option<(String, [u8; 32])> {
    let mut parts = token.split('.');
    let (Some("ebs1"), Some(id), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() != 64 {
        return None;
    }
    let secret = hex::decode(secret).ok()?;
    Some((id.to_ascii_lowercase(), sha256(&secret)))
}

/// Hashing parameters: Argon2id with the crate's defaults (19 MiB, 2
/// passes), OWASP's recommendation.
fn hasher() -> Argon2<'static> {
    Argon2::default()
}

/// A hash to check against when the name is unknown, so an unknown name
/// takes as long as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        hasher()
            .hash_password(b"no such account, no such password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Checks `password` against `policy`: long enough, not absurdly long.
pub fn check_password(policy: &AccountPolicy, password: &str) -> Result<(), AccountError> {
    let chars = password.chars().count();
    if chars < policy.min_password_chars {
        return Err(invalid(
            "password",
            format!(
                "{chars} characters; at least {} are needed",
                policy.min_password_chars
            ),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(
            "password",
            format!("longer than {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// An Argon2id hash of `password` (PHC string), checked against `policy`
/// first.
pub fn hash_password(policy: &AccountPolicy, password: &str) -> Result<String, AccountError> {
    check_password(policy, password)?;
    Accounts::hash(password)
}

pub fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!(
                "{name:?}: 1 to {MAX_NAME_BYTES} characters of a-z 0-9 . _ -, starting with a letter or digit"
            ),
        ))
    }
}

/// The accounts, tokens and sessions of one platform.
#[derive(Clone)]
pub struct Accounts {
    db: sled::Db,
    accounts: sled::Tree,
    tokens: sled::Tree,
    sessions: sled::Tree,
    pub policy: AccountPolicy,
}

impl Accounts {
    pub fn open(db: &sled::Db, policy: AccountPolicy) -> Result<Self, AccountError> {
        Ok(Accounts {
            db: db.clone(),
            accounts: db.open_tree("accounts")?,
            tokens: db.open_tree("tokens")?,
            sessions: db.open_tree("sessions")?,
            policy,
        })
    }

    fn flush(&self) -> Result<(), AccountError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    pub fn get(&self, name: &str) -> Result<Option<Account>, AccountError> {
        Ok(self
            .accounts
            .get(name.as_bytes())?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn put(&self, a: &Account) -> Result<(), AccountError> {
        let v = serde_json::to_vec(a).map_err(|e| AccountError::Hash(e.to_string()))?;
        self.accounts.insert(a.name.as_bytes(), v)?;
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<Account>, AccountError> {
        let mut out = Vec::new();
        for item in self.accounts.iter() {
            let (_, v) = item?;
            if let Ok(a) = serde_json::from_slice(&v) {
                out.push(a);
            }
        }
        Ok(out)
    }

    pub fn view(&self, a: &Account, now_ms: i64) -> AccountView {
        AccountView {
            name: a.name.clone(),
            display_name: a.display_name.clone(),
            roles: a.roles.iter().copied().collect(),
            areas: a.areas.iter().map(|c| c.to_string()).collect(),
            created_ms: a.created_ms,
            failures: a.failures,
            locked_until_ms: a.locked_until_ms.filter(|t| now_ms < *t),
            tokens: self.tokens_of(&a.name).unwrap_or_default(),
        }
    }

    pub fn check_password(&self, password: &str) -> Result<(), AccountError> {
        check_password(&self.policy, password)
    }

    fn hash(password: &str) -> Result<String, AccountError> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AccountError::Hash(e.to_string()))
    }

    /// Creates an account from a password hash made elsewhere (Argon2id,
    /// PHC string, e.g. from `hash_password`): moving accounts between
    /// stores, or one test account on many platforms without hashing for
    /// each.
    pub fn add_hashed(
        &self,
        name: &str,
        display_name: &str,
        roles: BTreeSet<Role>,
        areas: Vec<AreaCode>,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<Account, AccountError> {
        check_name(name)?;
        let parsed = PasswordHash::new(password_hash)
            .map_err(|e| invalid("password_hash", format!("not a PHC string: {e}")))?;
        if parsed.algorithm.as_str() != "argon2id" {
            return Err(invalid("password_hash", "must be Argon2id"));
        }
        if roles.is_empty() {
            return Err(invalid("roles", "an account needs at least one role"));
        }
        let account = Account {
            name: name.to_string(),
            display_name: display_name.to_string(),
            roles,
            areas,
            password_hash: password_hash.to_string(),
            created_ms: now_ms,
            failures: 0,
            locked_until_ms: None,
        };
        let v = serde_json::to_vec(&account).map_err(|e| AccountError::Hash(e.to_string()))?;
        if self
            .accounts
            .compare_and_swap(name.as_bytes(), None as Option<&[u8]>, Some(v))?
            .is_err()
        {
            return Err(AccountError::Exists(name.to_string()));
        }
        self.flush()?;
        Ok(account)
    }

    /// Creates an account. Blocking (Argon2id, fsync).
    pub fn add(
        &self,
        name: &str,
        display_name: &str,
        roles: BTreeSet<Role>,
        areas: Vec<AreaCode>,
        password: &str,
        now_ms: i64,
    ) -> Result<Account, AccountError> {
        check_name(name)?;
        if display_name.len() > MAX_DISPLAY_NAME_BYTES {
            return Err(invalid(
                "display_name",
                format!(
                    "{} bytes; the limit is {MAX_DISPLAY_NAME_BYTES} bytes (32 Chinese characters)",
                    display_name.len()
                ),
            ));
        }
        if roles.is_empty() {
            return Err(invalid("roles", "an account needs at least one role"));
        }
        self.check_password(password)?;
        let account = Account {
            name: name.to_string(),
            display_name: display_name.to_string(),
            roles,
            areas,
            password_hash: Self::hash(password)?,
            created_ms: now_ms,
            failures: 0,
            locked_until_ms: None,
        };
        let v = serde_json::to_vec(&account).map_err(|e| AccountError::Hash(e.to_string()))?;
        let inserted =
            self.accounts
                .compare_and_swap(name.as_bytes(), None as Option<&[u8]>, Some(v))?;
        if inserted.is_err() {
            return Err(AccountError::Exists(name.to_string()));
        }
        self.flush()?;
        Ok(account)
    }

    fn admins(&self, now_ms: i64) -> Result<usize, AccountError> {
        Ok(self
            .list()?
            .iter()
            .filter(|a| a.has(Role::Admin) && !a.is_locked(now_ms))
            .count())
    }

    /// Changes roles, areas or display name; the last usable admin keeps
    /// the admin role.
    pub fn update(
        &self,
        name: &str,
        display_name: Option<&str>,
        roles: Option<BTreeSet<Role>>,
        areas: Option<Vec<AreaCode>>,
        now_ms: i64,
    ) -> Result<Account, AccountError> {
        let mut a = self
            .get(name)?
            .ok_or_else(|| AccountError::NoSuchAccount(name.into()))?;
        if let Some(d) = display_name {
            if d.len() > MAX_DISPLAY_NAME_BYTES {
                return Err(invalid(
                    "display_name",
                    format!("the limit is {MAX_DISPLAY_NAME_BYTES} bytes"),
                ));
            }
            a.display_name = d.to_string();
        }
        if let Some(r) = roles {
            if r.is_empty() {
                return Err(invalid("roles", "an account needs at least one role"));
            }
            if a.has(Role::Admin) && !r.contains(&Role::Admin) && self.admins(now_ms)? <= 1 {
                return Err(AccountError::LastAdmin);
            }
            a.roles = r;
        }
        if let Some(areas) = areas {
            a.areas = areas;
        }
        self.put(&a)?;
        self.flush()?;
        Ok(a)
    }

    /// Sets a new password; every session of the account ends.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AccountError> {
        self.check_password(password)?;
        let mut a = self
            .get(name)?
            .ok_or_else(|| AccountError::NoSuchAccount(name.into()))?;
        a.password_hash = Self::hash(password)?;
        a.failures = 0;
        self.put(&a)?;
        self.end_sessions_of(name)?;
        self.flush()
    }

    /// Locks (until unlocked) or unlocks an account. A lock ends its
    /// sessions at once.
    pub fn set_locked(&self, name: &str, locked: bool, now_ms: i64) -> Result<(), AccountError> {
        let mut a = self
            .get(name)?
            .ok_or_else(|| AccountError::NoSuchAccount(name.into()))?;
        if locked {
            if a.has(Role::Admin) && !a.is_locked(now_ms) && self.admins(now_ms)? <= 1 {
                return Err(AccountError::LastAdmin);
            }
            a.locked_until_ms = Some(LOCKED_FOR_GOOD);
        } else {
            a.locked_until_ms = None;
            a.failures = 0;
        }
        self.put(&a)?;
        if locked {
            self.end_sessions_of(name)?;
        }
        self.flush()
    }

    /// Deletes an account with its tokens and sessions.
    pub fn remove(&self, name: &str, now_ms: i64) -> Result<(), AccountError> {
        let a = self
            .get(name)?
            .ok_or_else(|| AccountError::NoSuchAccount(name.into()))?;
        if a.has(Role::Admin) && !a.is_locked(now_ms) && self.admins(now_ms)? <= 1 {
            return Err(AccountError::LastAdmin);
        }
        self.end_sessions_of(name)?;
        for t in self.tokens_of(name)? {
            self.tokens.remove(t.id.as_bytes())?;
        }
        self.accounts.remove(name.as_bytes())?;
        self.flush()
    }

    /// Checks a login. Blocking (Argon2id): run it off the runtime, and
    /// bound how many run at once. A failure counts towards the lock-out;
    /// a success resets the count.
    pub fn login(
        &self,
        name: &str,
        password: &str,
        now_ms: i64,
    ) -> Result<Result<Account, LoginRefused>, AccountError> {
        let account = if password.len() > MAX_PASSWORD_BYTES {
            None
        } else {
            self.get(name)?
        };
        let Some(mut a) = account else {
            // As slow as a real check: no telling names from the timing.
            if let Ok(h) = PasswordHash::new(dummy_hash()) {
                let _ = hasher().verify_password(password.as_bytes(), &h);
            }
            return Ok(Err(LoginRefused::WrongCredentials));
        };
        if a.is_locked(now_ms) {
            return Ok(Err(LoginRefused::Locked {
                until_ms: a.locked_until_ms.unwrap_or(LOCKED_FOR_GOOD),
                just_locked: false,
            }));
        }
        let good = PasswordHash::new(&a.password_hash)
            .map(|h| hasher().verify_password(password.as_bytes(), &h).is_ok())
            .unwrap_or(false);
        if good {
            if a.failures != 0 || a.locked_until_ms.is_some() {
                a.failures = 0;
                a.locked_until_ms = None;
                self.put(&a)?;
            }
            return Ok(Ok(a));
        }
        a.failures += 1;
        let lock = a.failures >= self.policy.lockout_failures;
        if lock {
            a.locked_until_ms = Some(now_ms + self.policy.lockout_minutes * 60_000);
            a.failures = 0;
        }
        self.put(&a)?;
        if lock {
            self.end_sessions_of(name)?;
        }
        self.flush()?;
        Ok(Err(if lock {
            LoginRefused::Locked {
                until_ms: a.locked_until_ms.unwrap_or(LOCKED_FOR_GOOD),
                just_locked: true,
            }
        } else {
            LoginRefused::WrongCredentials
        }))
    }

    // ---- sessions ----

    /// Starts a session for `account`; returns its id (the cookie's value,
    /// shown once) and the session. Only the id's hash is stored.
    pub fn start_session(
        &self,
        account: &str,
        now_ms: i64,
    ) -> Result<(String, Session), AccountError> {
        let id = random_hex(32);
        let session = Session {
            account: account.to_string(),
            created_ms: now_ms,
            last_seen_ms: now_ms,
            csrf: random_hex(32),
        };
        let mut held: Vec<([u8; 32], Session)> = self.sessions_of(account)?;
        held.sort_by_key(|(_, s)| s.created_ms);
        while held.len() >= MAX_SESSIONS_PER_ACCOUNT {
            let (k, _) = held.remove(0);
            self.sessions.remove(k)?;
        }
        self.put_session(&sha256(id.as_bytes()), &session)?;
        self.flush()?;
        Ok((id, session))
    }

    fn put_session(&self, key: &[u8; 32], s: &Session) -> Result<(), AccountError> {
        let v = serde_json::to_vec(s).map_err(|e| AccountError::Hash(e.to_string()))?;
        self.sessions.insert(key, v)?;
        Ok(())
    }

    fn sessions_of(&self, account: &str) -> Result<Vec<([u8; 32], Session)>, AccountError> {
        let mut out = Vec::new();
        for item in self.sessions.iter() {
            let (k, v) = item?;
            let Ok(s) = serde_json::from_slice::<Session>(&v) else {
                continue;
            };
            if s.account == account {
                if let Ok(k) = <[u8; 32]>::try_from(k.as_ref()) {
                    out.push((k, s));
                }
            }
        }
        Ok(out)
    }

    pub fn end_sessions_of(&self, account: &str) -> Result<usize, AccountError> {
        let held = self.sessions_of(account)?;
        for (k, _) in &held {
            self.sessions.remove(k)?;
        }
        Ok(held.len())
    }

    pub fn end_session(&self, key: &[u8; 32]) -> Result<(), AccountError> {
        self.sessions.remove(key)?;
        self.flush()
    }

    fn usable(&self, name: &str, now_ms: i64) -> Result<Option<Account>, AccountError> {
        Ok(self.get(name)?.filter(|a| !a.is_locked(now_ms)))
    }

    /// The account behind session id `id`, if the session is live and the
    /// account usable. Marks the session used (written behind: at worst a
    /// crash makes it look idle for longer, never shorter).
    pub fn by_session(&self, id: &str, now_ms: i64) -> Result<Option<Authenticated>, AccountError> {
        if id.len() != 64 {
            return Ok(None);
        }
        let key = sha256(id.as_bytes());
        let Some(v) = self.sessions.get(key)? else {
            return Ok(None);
        };
        let Ok(mut s) = serde_json::from_slice::<Session>(&v) else {
            return Ok(None);
        };
        let idle = now_ms - s.last_seen_ms > self.policy.session_idle_minutes * 60_000;
        let old = now_ms - s.created_ms > self.policy.session_max_hours * 3_600_000;
        if idle || old {
            self.sessions.remove(key)?;
            return Ok(None);
        }
        let Some(account) = self.usable(&s.account, now_ms)? else {
            self.sessions.remove(key)?;
            return Ok(None);
        };
        if now_ms - s.last_seen_ms >= 30_000 {
            s.last_seen_ms = now_ms;
            self.put_session(&key, &s)?;
        }
        Ok(Some(Authenticated {
            account,
            csrf: Some(s.csrf),
            session: Some(key),
        }))
    }

    /// Removes sessions past their expiry (housekeeping).
    pub fn prune_sessions(&self, now_ms: i64) -> Result<usize, AccountError> {
        let mut n = 0;
        for item in self.sessions.iter() {
            let (k, v) = item?;
            let expired = match serde_json::from_slice::<Session>(&v) {
                Ok(s) => {
                    now_ms - s.last_seen_ms > self.policy.session_idle_minutes * 60_000
                        || now_ms - s.created_ms > self.policy.session_max_hours * 3_600_000
                }
                Err(_) => true,
            };
            if expired {
                self.sessions.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    // ---- tokens ----

    /// Creates an API token for `account`; returns the token, shown once
    /// (only its hash is kept). `given` imports a token made elsewhere
    /// (same `ebs1.` form), e.g. one set of test credentials for several
    /// platforms.
    pub fn add_token(
        &self,
        account: &str,
        label: &str,
        given: Option<&str>,
        now_ms: i64,
    ) -> Result<(TokenView, String), AccountError> {
        if self.get(account)?.is_none() {
            return Err(AccountError::NoSuchAccount(account.into()));
        }
        if label.len() > 64 {
            return Err(invalid("label", "the limit is 64 bytes"));
        }
        if self.tokens_of(account)?.len() >= MAX_TOKENS_PER_ACCOUNT {
            return Err(invalid(
                "tokens",
                format!("an account holds at most {MAX_TOKENS_PER_ACCOUNT} tokens; revoke one"),
            ));
        }
        let token = match given {
            Some(t) => t.to_string(),
            None => format!("ebs1.{}.{}", random_hex(8), random_hex(32)),
        };
        let (id, secret_sha256) = parse_token(&token).ok_or_else(|| {
            invalid(
                "token",
                "a token reads ebs1.<16 hex digits>.<64 hex digits>",
            )
        })?;
        let record = TokenRecord {
            account: account.to_string(),
            label: label.to_string(),
            created_ms: now_ms,
            secret_sha256,
        };
        let v = serde_json::to_vec(&record).map_err(|e| AccountError::Hash(e.to_string()))?;
        if self
            .tokens
            .compare_and_swap(id.as_bytes(), None as Option<&[u8]>, Some(v))?
            .is_err()
        {
            return Err(invalid("token", "a token with this id exists already"));
        }
        self.flush()?;
        Ok((
            TokenView {
                id,
                label: label.to_string(),
                created_ms: now_ms,
            },
            token,
        ))
    }

    pub fn tokens_of(&self, account: &str) -> Result<Vec<TokenView>, AccountError> {
        let mut out = Vec::new();
        for item in self.tokens.iter() {
            let (k, v) = item?;
            let Ok(r) = serde_json::from_slice::<TokenRecord>(&v) else {
                continue;
            };
            if r.account == account {
                out.push(TokenView {
                    id: String::from_utf8_lossy(&k).into_owned(),
                    label: r.label,
                    created_ms: r.created_ms,
                });
            }
        }
        Ok(out)
    }

    /// Revokes token `id` of `account`.
    pub fn revoke_token(&self, account: &str, id: &str) -> Result<(), AccountError> {
        let owned = self
            .tokens
            .get(id.as_bytes())?
            .and_then(|v| serde_json::from_slice::<TokenRecord>(&v).ok())
            .is_some_and(|r| r.account == account);
        if !owned {
            return Err(AccountError::NoSuchToken(id.into()));
        }
        self.tokens.remove(id.as_bytes())?;
        self.flush()
    }

    /// The account behind bearer token `token`, if it is valid and the
    /// account usable.
    pub fn by_token(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<Option<Authenticated>, AccountError> {
        let Some((id, given)) = parse_token(token) else {
            return Ok(None);
        };
        let Some(v) = self.tokens.get(id.as_bytes())? else {
            return Ok(None);
        };
        let Ok(r) = serde_json::from_slice::<TokenRecord>(&v) else {
            return Ok(None);
        };
        use subtle::ConstantTimeEq;
        if !bool::from(r.secret_sha256.ct_eq(&given)) {
            return Ok(None);
        }
        Ok(self
            .usable(&r.account, now_ms)?
            .map(|account| Authenticated {
                account,
                csrf: None,
                session: None,
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        (dir, Accounts::open(&db, AccountPolicy::default()).unwrap())
    }

    fn roles(r: &[Role]) -> BTreeSet<Role> {
        r.iter().copied().collect()
    }

    #[test]
    fn passwords_are_hashed_checked_and_locked_out() {
        let (_d, a) = store();
        let e = a
            .add("li", "李", roles(&[Role::Drafter]), vec![], "short", 0)
            .unwrap_err();
        assert!(e.to_string().contains("password") && e.to_string().contains("12"));
        a.add(
            "li",
            "李",
            roles(&[Role::Drafter]),
            vec![],
            "correct horse battery",
            0,
        )
        .unwrap();
        assert!(matches!(
            a.add(
                "li",
                "x",
                roles(&[Role::Drafter]),
                vec![],
                "correct horse battery",
                0
            ),
            Err(AccountError::Exists(_))
        ));
        // The hash is Argon2id; the password is nowhere in the store.
        let raw = a.accounts.get("li").unwrap().unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("$argon2id$") && !text.contains("horse"));
        assert!(a.login("li", "correct horse battery", 1).unwrap().is_ok());
        for i in 0..4 {
            assert_eq!(
                a.login("li", "wrong password!", 2 + i).unwrap(),
                Err(LoginRefused::WrongCredentials)
            );
        }
        let locked = a.login("li", "wrong password!", 10).unwrap();
        assert!(matches!(
            locked,
            Err(LoginRefused::Locked {
                just_locked: true,
                ..
            })
        ));
        // Locked: even the right password is refused, until the lock ends.
        assert!(matches!(
            a.login("li", "correct horse battery", 11).unwrap(),
            Err(LoginRefused::Locked {
                just_locked: false,
                ..
            })
        ));
        let later = 10 + 15 * 60_000 + 1;
        assert!(a
            .login("li", "correct horse battery", later)
            .unwrap()
            .is_ok());
        assert_eq!(
            a.login("nobody", "correct horse battery", 1).unwrap(),
            Err(LoginRefused::WrongCredentials)
        );
    }

    #[test]
    fn sessions_expire_and_end_with_their_account() {
        let (_d, a) = store();
        a.add(
            "wang",
            "王",
            roles(&[Role::Approver]),
            vec![],
            "a long enough pass",
            0,
        )
        .unwrap();
        let (id, s) = a.start_session("wang", 0).unwrap();
        assert_eq!(s.csrf.len(), 64);
        assert!(a.by_session(&id, 1000).unwrap().is_some());
        // Idle for longer than 30 minutes: gone.
        assert!(a.by_session(&id, 31 * 60_000 + 1000).unwrap().is_none());
        assert!(
            a.by_session(&id, 1000).unwrap().is_none(),
            "removed, not just refused"
        );
        // Kept alive by use, it still ends after 12 hours.
        let (id, _) = a.start_session("wang", 0).unwrap();
        let mut t = 0;
        while t < 12 * 3_600_000 {
            t += 20 * 60_000;
            let live = a.by_session(&id, t).unwrap().is_some();
            assert_eq!(live, t <= 12 * 3_600_000, "at {t}");
        }
        let (id, _) = a.start_session("wang", 0).unwrap();
        a.add(
            "admin",
            "管理员",
            roles(&[Role::Admin]),
            vec![],
            "a long enough pass",
            0,
        )
        .unwrap();
        a.set_locked("wang", true, 10).unwrap();
        assert!(a.by_session(&id, 20).unwrap().is_none());
        assert!(a.sessions_of("wang").unwrap().is_empty());
        assert!(a.by_session("not-a-session", 20).unwrap().is_none());
    }

    #[test]
    fn accounts_sessions_and_tokens_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (session, token) = {
            let db = sled::open(dir.path()).unwrap();
            let a = Accounts::open(&db, AccountPolicy::default()).unwrap();
            a.add(
                "zhou",
                "周",
                roles(&[Role::Auditor]),
                vec![],
                "a long enough pass",
                0,
            )
            .unwrap();
            let (session, _) = a.start_session("zhou", 0).unwrap();
            let (_, token) = a.add_token("zhou", "", None, 0).unwrap();
            (session, token)
        };
        // sled lets go of its file lock from a thread of its own, a moment
        // after the last handle is dropped.
        let db = (0..100)
            .find_map(|_| {
                sled::open(dir.path()).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                })
            })
            .expect("the store opens again");
        let a = Accounts::open(&db, AccountPolicy::default()).unwrap();
        assert_eq!(
            a.by_session(&session, 1).unwrap().unwrap().account.name,
            "zhou"
        );
        assert_eq!(a.by_token(&token, 1).unwrap().unwrap().account.name, "zhou");
        assert!(a.login("zhou", "a long enough pass", 2).unwrap().is_ok());
    }

    #[test]
    fn tokens_are_hashed_revocable_and_die_with_the_account() {
        let (_d, a) = store();
        a.add(
            "ops",
            "运维",
            roles(&[Role::Maintainer]),
            vec![],
            "a long enough pass",
            0,
        )
        .unwrap();
        a.add(
            "boss",
            "管理员",
            roles(&[Role::Admin]),
            vec![],
            "a long enough pass",
            0,
        )
        .unwrap();
        let (view, token) = a.add_token("ops", "cron", None, 0).unwrap();
        assert!(token.starts_with(&format!("ebs1.{}.", view.id)));
        let raw: Vec<u8> = a.tokens.get(view.id.as_bytes()).unwrap().unwrap().to_vec();
        assert!(!String::from_utf8_lossy(&raw).contains(token.rsplit('.').next().unwrap()));
        assert_eq!(a.by_token(&token, 1).unwrap().unwrap().account.name, "ops");
        let mut wrong = token.clone();
        wrong.pop();
        wrong.push(if token.ends_with('0') { '1' } else { '0' });
        assert!(a.by_token(&wrong, 1).unwrap().is_none());
        a.revoke_token("ops", &view.id).unwrap();
        assert!(a.by_token(&token, 1).unwrap().is_none());
        let (_, token) = a.add_token("ops", "cron", None, 0).unwrap();
        a.remove("ops", 2).unwrap();
        assert!(a.by_token(&token, 3).unwrap().is_none());
        assert!(matches!(a.remove("boss", 3), Err(AccountError::LastAdmin)));
    }
}
