//! One set of test accounts (drafter, approver, maintainer, auditor,
//! admin), the same on every platform it is given to. Each platform keeps
//! its own accounts: the tokens are imported (only their hashes kept) and
//! the password hashes made once, so provisioning 90 platforms costs no
//! 450 Argon2id runs.

use std::collections::BTreeSet;

use platform::accounts::{Accounts, Role};

#[derive(Clone, Debug)]
pub struct Person {
    pub name: String,
    pub password: String,
    pub token: String,
    pub roles: Vec<Role>,
    password_hash: String,
}

#[derive(Clone, Debug)]
pub struct Credentials {
    /// Drafts (drafter and clerk).
    pub drafter: Person,
    /// Approves and cancels.
    pub approver: Person,
    /// Commands and revocations.
    pub maintainer: Person,
    pub auditor: Person,
    pub admin: Person,
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Credentials {
    /// Fresh random passwords and tokens.
    pub fn generate() -> anyhow::Result<Self> {
        let policy = platform::accounts::AccountPolicy::default();
        let person = |name: &str, roles: &[Role]| -> anyhow::Result<Person> {
            let password = format!("pw-{}", random_hex(12));
            Ok(Person {
                name: name.into(),
                password_hash: platform::accounts::hash_password(&policy, &password)?,
                password,
                token: format!("ebs1.{}.{}", random_hex(8), random_hex(32)),
                roles: roles.to_vec(),
            })
        };
        Ok(Credentials {
            drafter: person("drafter", &[Role::Drafter, Role::Clerk])?,
            approver: person("approver", &[Role::Approver])?,
            maintainer: person("maintainer", &[Role::Maintainer])?,
            auditor: person("auditor", &[Role::Auditor])?,
            admin: person("admin", &[Role::Admin])?,
        })
    }

    pub fn people(&self) -> [&Person; 5] {
        [
            &self.drafter,
            &self.approver,
            &self.maintainer,
            &self.auditor,
            &self.admin,
        ]
    }

    /// Creates these accounts, with their tokens, in `accounts` (those it
    /// has already are left as they are: a restarted platform keeps them).
    pub fn provision(&self, accounts: &Accounts) -> anyhow::Result<()> {
        let now = certs::time::unix_now_ms();
        for p in self.people() {
            if accounts.get(&p.name)?.is_some() {
                continue;
            }
            let roles: BTreeSet<Role> = p.roles.iter().copied().collect();
            accounts.add_hashed(&p.name, &p.name, roles, vec![], &p.password_hash, now)?;
            accounts.add_token(&p.name, "testbed", Some(&p.token), now)?;
        }
        Ok(())
    }
}
