//! Logging in and out, the first admin's setup, accounts and their tokens.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use certs::AreaCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{session_cookie, Caller, ClientAddr, SESSION_COOKIE};
use super::error::ApiError;
use super::{blocking, ApiJson, ApiState};
use crate::accounts::{sha256, AccountView, LoginRefused, Role, TokenView};
use crate::audit::{china_time, Outcome, Record};

/// How the trail names a result: done, or refused.
fn outcome_of<T, E>(result: &Result<T, E>) -> Outcome {
    if result.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Refused
    }
}

/// Records in the audit trail off the runtime (each entry is flushed).
async fn audit(s: &ApiState, r: Record) -> Result<(), ApiError> {
    let wf = s.workflow.clone();
    blocking(move || wf.record(r)).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub name: String,
    pub password: String,
}

/// Who is logged in, with the CSRF token to send back in `X-CSRF-Token`.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub name: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub areas: Vec<String>,
    /// Present for a browser session; None for an API token.
    pub csrf: Option<String>,
    pub platform: String,
}

fn cookie(s: &ApiState, value: &str, max_age_s: i64) -> String {
    let secure = if s.secure_cookies { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    )
}

fn short(name: &str) -> String {
    // A failed login's name goes into the trail: bounded and printable.
    name.chars().filter(|c| !c.is_control()).take(32).collect()
}

fn from(addr: &Option<Extension<ClientAddr>>) -> String {
    addr.as_ref()
        .map(|a| format!("from {}", a.0 .0.ip()))
        .unwrap_or_default()
}

/// One of the platform's Argon2id slots (they bound the CPU and memory
/// that password checks and hashes may take at once).
async fn hashing_slot(s: &ApiState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    s.hashing
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal("shutting down"))
}

/// Checks `name`'s password off the runtime, with at most as many Argon2id
/// checks at once as the platform allows; a failure counts towards the
/// account's lock-out (`Accounts::login`).
pub async fn check_password(
    s: &ApiState,
    name: String,
    password: String,
) -> Result<Result<crate::accounts::Account, LoginRefused>, ApiError> {
    let permit = hashing_slot(s).await?;
    let wf = s.workflow.clone();
    let now = (wf.now)();
    blocking(move || {
        let _permit = permit;
        wf.accounts.login(&name, &password, now)
    })
    .await
}

/// Logs in: a fresh session (any session the browser had is ended, so a
/// planted session id is never taken over), its id in an HttpOnly,
/// SameSite=Strict cookie. Repeated failures lock the account.
#[utoipa::path(post, path = "/api/login", request_body = LoginRequest,
    responses((status = 200, body = SessionView), (status = 401, body = super::error::ErrorBody), (status = 423, body = super::error::ErrorBody)))]
pub async fn login(
    State(s): State<ApiState>,
    addr: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let where_from = from(&addr);
    let now = (s.workflow.now)();
    let checked = check_password(&s, req.name.clone(), req.password).await?;
    let wf = &s.workflow;
    let account = match checked {
        Ok(a) => a,
        Err(refused) => {
            let tried = short(&req.name);
            let mut r = Record::new(&tried, "login.failed", format!("account {tried}"))
                .outcome(Outcome::Refused)
                .detail(where_from.clone());
            let answer = match refused {
                LoginRefused::WrongCredentials => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "wrong_credentials",
                    "wrong name or password",
                    "用户名或密码错误",
                ),
                LoginRefused::Locked {
                    until_ms,
                    just_locked,
                } => {
                    let until = if until_ms == crate::accounts::LOCKED_FOR_GOOD {
                        (
                            "until an admin unlocks it".to_string(),
                            "请联系管理员解锁".to_string(),
                        )
                    } else {
                        let t = china_time(until_ms);
                        (format!("until {t}"), format!("请于 {t} 后再试"))
                    };
                    if just_locked {
                        r = Record::new(&tried, "account.locked", format!("account {tried}"))
                            .detail(format!(
                                "{} failed logins in a row {where_from}",
                                wf.accounts.policy.lockout_failures
                            ));
                    }
                    ApiError::new(
                        StatusCode::LOCKED,
                        "locked",
                        format!(
                            "this account is locked after repeated failed logins, {}",
                            until.0
                        ),
                        format!("多次登录失败，账户已锁定，{}", until.1),
                    )
                }
            };
            audit(&s, r).await?;
            return Err(answer);
        }
    };
    let (old, w, name) = (session_cookie(&headers), wf.clone(), account.name.clone());
    let (id, session) = blocking(move || {
        if let Some(old) = old {
            let _ = w.accounts.end_session(&sha256(old.as_bytes()));
        }
        w.accounts.start_session(&name, now)
    })
    .await?;
    audit(
        &s,
        Record::new(&account.name, "login", format!("account {}", account.name)).detail(where_from),
    )
    .await?;
    let max_age = wf.accounts.policy.session_max_hours * 3600;
    let view = SessionView {
        name: account.name.clone(),
        display_name: account.display_name.clone(),
        roles: account.roles.iter().copied().collect(),
        areas: account
            .reach(&wf.relay.scope)
            .iter()
            .map(|a| a.to_string())
            .collect(),
        csrf: Some(session.csrf),
        platform: (*s.name).clone(),
    };
    Ok(([(header::SET_COOKIE, cookie(&s, &id, max_age))], Json(view)).into_response())
}

#[utoipa::path(post, path = "/api/logout", responses((status = 204)))]
pub async fn logout(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
) -> Result<Response, ApiError> {
    if let Some(k) = c.session {
        let wf = s.workflow.clone();
        blocking(move || wf.accounts.end_session(&k)).await?;
    }
    audit(
        &s,
        Record::new(c.name(), "logout", format!("account {}", c.name())),
    )
    .await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, cookie(&s, "", 0))],
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/session", responses((status = 200, body = SessionView)))]
pub async fn session(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
) -> Result<Json<SessionView>, ApiError> {
    let csrf = c.csrf.clone();
    Ok(Json(SessionView {
        name: c.account.name.clone(),
        display_name: c.account.display_name.clone(),
        roles: c.account.roles.iter().copied().collect(),
        areas: c
            .account
            .reach(&s.workflow.relay.scope)
            .iter()
            .map(|a| a.to_string())
            .collect(),
        csrf,
        platform: (*s.name).clone(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub old_password: String,
    pub new_password: String,
}

/// Changes one's own password (the old one is checked); every session of
/// the account ends.
#[utoipa::path(post, path = "/api/session/password", request_body = PasswordChange, responses((status = 204)))]
pub async fn change_password(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    ApiJson(req): ApiJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    let wf = s.workflow.clone();
    let name = c.name().to_string();
    let permit = hashing_slot(&s).await?;
    let now = (wf.now)();
    let r = blocking(move || {
        let _permit = permit;
        match wf.accounts.login(&name, &req.old_password, now)? {
            Ok(_) => wf
                .accounts
                .set_password(&name, &req.new_password)
                .map(|_| true),
            Err(_) => Ok(false),
        }
    })
    .await?;
    let outcome = if r { Outcome::Ok } else { Outcome::Refused };
    audit(
        &s,
        Record::new(
            c.name(),
            "account.password",
            format!("account {}", c.name()),
        )
        .outcome(outcome),
    )
    .await?;
    if !r {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_credentials",
            "old_password: wrong password",
            "原密码错误",
        )
        .field("old_password"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    /// The one-time code the platform printed at its first start.
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    pub password: String,
}

/// Creates the first admin with the one-time setup code printed at the
/// first start (only while the platform has no account).
#[utoipa::path(post, path = "/api/setup", request_body = SetupRequest,
    responses((status = 201, body = AccountView), (status = 403, body = super::error::ErrorBody)))]
pub async fn setup(
    State(s): State<ApiState>,
    ApiJson(req): ApiJson<SetupRequest>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    // The code is taken as it is checked: two setups at once make one admin.
    let taken = {
        use subtle::ConstantTimeEq;
        let mut slot = s.setup.lock().unwrap_or_else(|p| p.into_inner());
        let good = slot.is_some_and(|h| bool::from(h.ct_eq(&sha256(req.code.trim().as_bytes()))));
        if good {
            slot.take()
        } else {
            None
        }
    };
    if taken.is_none() || !s.workflow.accounts.is_empty() {
        audit(
            &s,
            Record::new(&short(&req.name), "setup", "first admin").outcome(Outcome::Refused),
        )
        .await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "no setup is open, or the setup code is wrong",
            "初始化码错误，或本平台已有账户",
        ));
    }
    let wf = s.workflow.clone();
    let now = (wf.now)();
    let name = req.name.clone();
    let added = blocking(move || {
        wf.accounts.add(
            &req.name,
            &req.display_name,
            [Role::Admin].into(),
            vec![],
            &req.password,
            now,
        )
    })
    .await;
    let account = match added {
        Ok(a) => a,
        Err(e) => {
            // A refused name or password leaves the code usable.
            *s.setup.lock().unwrap_or_else(|p| p.into_inner()) = taken;
            return Err(e);
        }
    };
    audit(
        &s,
        Record::new(&name, "account.create", format!("account {name}"))
            .detail("first admin, by setup code"),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(s.workflow.accounts.view(&account, now)),
    ))
}

#[utoipa::path(get, path = "/api/accounts", responses((status = 200, body = [AccountView])))]
pub async fn list(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<AccountView>>, ApiError> {
    c.require(&[Role::Admin, Role::Auditor])?;
    let now = (s.workflow.now)();
    let a = &s.workflow.accounts;
    Ok(Json(a.list()?.iter().map(|x| a.view(x, now)).collect()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    pub roles: Vec<Role>,
    /// Area codes; empty or absent: the platform's whole scope.
    #[serde(default)]
    pub areas: Vec<String>,
    pub password: String,
}

fn parse_areas(s: &ApiState, areas: &[String]) -> Result<Vec<AreaCode>, ApiError> {
    let mut out = Vec::new();
    for a in areas {
        let code: AreaCode = a.parse().map_err(|_| {
            ApiError::invalid(
                "areas",
                format!("{a:?} is not a 12-digit area code"),
                "区域编码格式错误",
            )
        })?;
        out.push(code);
    }
    if let Some(out) = certs::area::first_outside(&out, &s.workflow.relay.scope) {
        return Err(ApiError::invalid(
            "areas",
            format!("area {out} lies outside this platform's scope"),
            "区域不在本平台管辖范围内",
        ));
    }
    Ok(out)
}

#[utoipa::path(post, path = "/api/accounts", request_body = NewAccount,
    responses((status = 201, body = AccountView), (status = 400, body = super::error::ErrorBody)))]
pub async fn create(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    ApiJson(req): ApiJson<NewAccount>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    c.require(&[Role::Admin])?;
    let areas = parse_areas(&s, &req.areas)?;
    let wf = s.workflow.clone();
    let now = (wf.now)();
    let roles: BTreeSet<Role> = req.roles.iter().copied().collect();
    let detail = roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(",");
    let name = req.name.clone();
    let result = blocking(move || {
        wf.accounts.add(
            &req.name,
            &req.display_name,
            roles,
            areas,
            &req.password,
            now,
        )
    })
    .await;
    let outcome = outcome_of(&result);
    audit(
        &s,
        Record::new(
            c.name(),
            "account.create",
            format!("account {}", short(&name)),
        )
        .outcome(outcome)
        .detail(format!("roles {detail}")),
    )
    .await?;
    let a = result?;
    Ok((StatusCode::CREATED, Json(s.workflow.accounts.view(&a, now))))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountChange {
    pub display_name: Option<String>,
    pub roles: Option<Vec<Role>>,
    pub areas: Option<Vec<String>>,
    /// true locks (and ends every session at once), false unlocks.
    pub locked: Option<bool>,
    /// A new password set by an admin (every session ends).
    pub password: Option<String>,
}

#[utoipa::path(patch, path = "/api/accounts/{name}", request_body = AccountChange,
    params(("name" = String, Path)), responses((status = 200, body = AccountView)))]
pub async fn update(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<AccountChange>,
) -> Result<Json<AccountView>, ApiError> {
    c.require(&[Role::Admin])?;
    let areas = req.areas.as_ref().map(|a| parse_areas(&s, a)).transpose()?;
    let wf = s.workflow.clone();
    let now = (wf.now)();
    let n = name.clone();
    let mut what = Vec::new();
    if req.roles.is_some() {
        what.push("roles");
    }
    if req.areas.is_some() {
        what.push("areas");
    }
    if req.display_name.is_some() {
        what.push("display_name");
    }
    match req.locked {
        Some(true) => what.push("locked"),
        Some(false) => what.push("unlocked"),
        None => {}
    }
    if req.password.is_some() {
        what.push("password");
    }
    let result = blocking(move || {
        let roles = req.roles.map(|r| r.into_iter().collect());
        let mut a = wf
            .accounts
            .update(&n, req.display_name.as_deref(), roles, areas, now)?;
        if let Some(p) = &req.password {
            wf.accounts.set_password(&n, p)?;
        }
        if let Some(l) = req.locked {
            wf.accounts.set_locked(&n, l, now)?;
            a = wf.accounts.get(&n)?.unwrap_or(a);
        }
        Ok::<_, crate::accounts::AccountError>(a)
    })
    .await;
    let outcome = outcome_of(&result);
    audit(
        &s,
        Record::new(
            c.name(),
            "account.change",
            format!("account {}", short(&name)),
        )
        .outcome(outcome)
        .detail(what.join(",")),
    )
    .await?;
    let a = result?;
    Ok(Json(s.workflow.accounts.view(&a, now)))
}

#[utoipa::path(delete, path = "/api/accounts/{name}", params(("name" = String, Path)), responses((status = 204)))]
pub async fn remove(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    c.require(&[Role::Admin])?;
    let wf = s.workflow.clone();
    let n = name.clone();
    let now = (wf.now)();
    let result = blocking(move || wf.accounts.remove(&n, now)).await;
    let outcome = outcome_of(&result);
    audit(
        &s,
        Record::new(
            c.name(),
            "account.delete",
            format!("account {}", short(&name)),
        )
        .outcome(outcome),
    )
    .await?;
    result?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    #[serde(default)]
    pub label: String,
}

/// A new token, shown this once.
#[derive(Serialize, ToSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub view: TokenView,
    pub token: String,
}

/// Creates an API token for an account (an admin for anyone, anyone for
/// themselves). Only its hash is kept; the answer shows it once.
#[utoipa::path(post, path = "/api/accounts/{name}/tokens", request_body = NewToken,
    params(("name" = String, Path)), responses((status = 201, body = IssuedToken)))]
pub async fn add_token(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    if c.name() != name {
        c.require(&[Role::Admin])?;
    }
    let now = (s.workflow.now)();
    let (wf, n) = (s.workflow.clone(), name.clone());
    let result = blocking(move || wf.accounts.add_token(&n, &req.label, None, now)).await;
    let outcome = outcome_of(&result);
    let id = result
        .as_ref()
        .map(|(v, _)| v.id.clone())
        .unwrap_or_default();
    audit(
        &s,
        Record::new(
            c.name(),
            "token.create",
            format!("account {} token {id}", short(&name)),
        )
        .outcome(outcome),
    )
    .await?;
    let (view, token) = result?;
    Ok((StatusCode::CREATED, Json(IssuedToken { view, token })))
}

#[utoipa::path(delete, path = "/api/accounts/{name}/tokens/{id}",
    params(("name" = String, Path), ("id" = String, Path)), responses((status = 204)))]
pub async fn revoke_token(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if c.name() != name {
        c.require(&[Role::Admin])?;
    }
    let (wf, n, t) = (s.workflow.clone(), name.clone(), id.clone());
    let result = blocking(move || wf.accounts.revoke_token(&n, &t)).await;
    let outcome = outcome_of(&result);
    audit(
        &s,
        Record::new(
            c.name(),
            "token.revoke",
            format!("account {} token {}", short(&name), short(&id)),
        )
        .outcome(outcome),
    )
    .await?;
    result?;
    Ok(StatusCode::NO_CONTENT)
}
