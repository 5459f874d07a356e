//! The `certs` tool end to end, as an operator runs it from a shell.

use std::path::Path;
use std::process::{Command, Output};

const COUNTY: &str = "360121000000";
const TOWN: &str = "360121100000";
const VILLAGE: &str = "360121100201";
const OTHER_VILLAGE: &str = "360121101201";

fn certs(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_certs"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run certs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = certs(dir, args);
    assert!(
        out.status.success(),
        "certs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a misuse and checks it fails with exactly one line on stderr.
fn refused(dir: &Path, args: &[&str], expect: &str) {
    let out = certs(dir, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "certs {args:?} should fail");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one-line error expected: {err}"
    );
    assert!(
        err.contains(expect),
        "error {err:?} should mention {expect:?}"
    );
}

fn issue(
    _dir: &Path,
    issuer: &str,
    tier: &str,
    name: &str,
    code: &str,
    scope: &str,
    out: &str,
) -> Vec<String> {
    [
        "issue",
        "--issuer-key",
        &format!("{issuer}.key"),
        "--issuer-cert",
        &format!("{issuer}.pem"),
        "--tier",
        tier,
        "--name",
        name,
        "--code",
        code,
        "--scope",
        scope,
        "--key",
        &format!("{out}.key"),
        "--cert",
        &format!("{out}.pem"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn root_to_terminal_verify_bundle_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(
        d,
        &[
            "root",
            "--name",
            "江西省应急广播根",
            "--code",
            "43600000000000101010000",
            "--scope",
            "360000000000",
            "--key",
            "root.key",
            "--cert",
            "root.pem",
        ],
    );
    ok(
        d,
        &args(&issue(
            d,
            "root",
            "district",
            "经开区",
            "43601210000000101010000",
            COUNTY,
            "district",
        )),
    );
    ok(
        d,
        &args(&issue(
            d,
            "district",
            "town",
            "蛟桥镇",
            "43601211000000101010000",
            TOWN,
            "town",
        )),
    );
    ok(
        d,
        &args(&issue(
            d,
            "town",
            "village",
            "前进村",
            "43601211002010101010000",
            VILLAGE,
            "village",
        )),
    );
    ok(
        d,
        &args(&issue(
            d,
            "village",
            "terminal",
            "前进村1号音柱",
            "43601211002010301010000",
            VILLAGE,
            "terminal",
        )),
    );

    let shown = ok(d, &["show", "terminal.pem"]);
    assert!(
        shown.contains("前进村1号音柱") && shown.contains("tier:          terminal"),
        "{shown}"
    );
    assert_eq!(
        shown.matches("certificate ").count(),
        4,
        "district, town, village, terminal: {shown}"
    );
    assert!(
        shown.contains("+08:00"),
        "times are shown in China time: {shown}"
    );
    let verified = ok(
        d,
        &["verify", "--root", "root.pem", "--chain", "terminal.pem"],
    );
    assert!(verified.starts_with("OK: terminal"), "{verified}");

    ok(
        d,
        &[
            "bundle",
            "--root",
            "root.pem",
            "--cert",
            "terminal.pem",
            "--key",
            "terminal.key",
            "--out",
            "terminal.bundle",
        ],
    );
    let bundle_shown = ok(d, &["show", "terminal.bundle"]);
    assert!(bundle_shown.contains("private key (not shown)"));
    let key_text = std::fs::read_to_string(d.join("terminal.key")).unwrap();
    let secret_line = key_text.lines().nth(1).unwrap();
    assert!(
        !bundle_shown.contains(secret_line),
        "show never prints key material"
    );

    // The district revokes the village; the terminal's chain is then refused.
    let village_serial = ok(d, &["show", "village.pem"])
        .lines()
        .rfind(|l| l.starts_with("certificate "))
        .unwrap()[12..]
        .to_string();
    ok(
        d,
        &[
            "revoke",
            "--issuer-key",
            "district.key",
            "--issuer-cert",
            "district.pem",
            "--serial",
            &village_serial,
            "--out",
            "crl1.pem",
        ],
    );
    refused(
        d,
        &[
            "verify",
            "--root",
            "root.pem",
            "--chain",
            "terminal.pem",
            "--crl",
            "crl1.pem",
        ],
        "revoked",
    );
    // The next list keeps the serial and grows the number.
    ok(
        d,
        &[
            "revoke",
            "--issuer-key",
            "district.key",
            "--issuer-cert",
            "district.pem",
            "--serial",
            "1234",
            "--previous",
            "crl1.pem",
            "--out",
            "crl2.pem",
        ],
    );
    let crl2 = ok(d, &["show", "crl2.pem"]);
    assert!(
        crl2.contains("number 2") && crl2.contains(&village_serial),
        "{crl2}"
    );
    // An older list after a newer one is a rollback.
    refused(
        d,
        &[
            "verify",
            "--root",
            "root.pem",
            "--chain",
            "district.pem",
            "--crl",
            "crl2.pem",
            "--crl",
            "crl1.pem",
        ],
        "not newer",
    );
    // Re-keying the town: a new town key, and the village's existing key
    // re-certified under it (the key file is not touched).
    ok(
        d,
        &args(&issue(
            d,
            "district",
            "town",
            "蛟桥镇",
            "43601211000000101010000",
            TOWN,
            "town-new",
        )),
    );
    let village_key = std::fs::read(d.join("village.key")).unwrap();
    let mut recertify = issue(
        d,
        "town-new",
        "village",
        "前进村",
        "43601211002010101010000",
        VILLAGE,
        "village",
    );
    recertify.push("--reuse-key".into());
    // The old certificate file is in the way: refused, nothing overwritten.
    refused(d, &args(&recertify), "already exists");
    let n = recertify.len();
    recertify[n - 2] = "village-new.pem".into();
    ok(d, &args(&recertify));
    assert_eq!(std::fs::read(d.join("village.key")).unwrap(), village_key);
    let shown = ok(
        d,
        &["verify", "--root", "root.pem", "--chain", "village-new.pem"],
    );
    assert!(shown.starts_with("OK: village"), "{shown}");
    let old_pub = ok(d, &["show", "village.pem"]);
    let new_pub = ok(d, &["show", "village-new.pem"]);
    let key_line = |t: &str| {
        t.lines()
            .rfind(|l| l.contains("public key:"))
            .map(str::to_string)
    };
    assert!(key_line(&old_pub).is_some());
    assert_eq!(
        key_line(&old_pub),
        key_line(&new_pub),
        "same key, new chain"
    );

    // A bundle carries the lists in force; one whose own chain a list
    // revokes is not written.
    ok(
        d,
        &[
            "bundle",
            "--root",
            "root.pem",
            "--cert",
            "district.pem",
            "--key",
            "district.key",
            "--crl",
            "crl2.pem",
            "--out",
            "district.bundle",
        ],
    );
    let text = std::fs::read_to_string(d.join("district.bundle")).unwrap();
    assert!(text.contains("EBS REVOCATION LIST"));
    refused(
        d,
        &[
            "bundle",
            "--root",
            "root.pem",
            "--cert",
            "terminal.pem",
            "--key",
            "terminal.key",
            "--crl",
            "crl2.pem",
            "--out",
            "revoked.bundle",
        ],
        "revoked",
    );
    assert!(!d.join("revoked.bundle").exists());
    // Past its validity the chain is refused as expired.
    refused(
        d,
        &[
            "verify",
            "--root",
            "root.pem",
            "--chain",
            "terminal.pem",
            "--at",
            "2100-01-01T00:00:00+08:00",
        ],
        "expired",
    );
}

#[test]
fn misuse_gets_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(
        d,
        &[
            "root",
            "--name",
            "根",
            "--code",
            "43600000000000101010000",
            "--scope",
            "360000000000",
            "--key",
            "root.key",
            "--cert",
            "root.pem",
        ],
    );
    ok(
        d,
        &args(&issue(
            d,
            "root",
            "district",
            "经开区",
            "43601210000000101010000",
            COUNTY,
            "district",
        )),
    );
    ok(
        d,
        &args(&issue(
            d,
            "district",
            "town",
            "蛟桥镇",
            "43601211000000101010000",
            TOWN,
            "town",
        )),
    );

    // Outside the issuer's scope: a town issuing a village of another town.
    refused(
        d,
        &args(&issue(
            d,
            "town",
            "village",
            "别村",
            "43601211012010101010000",
            OTHER_VILLAGE,
            "x",
        )),
        "outside the issuer's scope",
    );
    // Wrong tier order.
    refused(
        d,
        &args(&issue(
            d,
            "town",
            "district",
            "假区",
            "43601211000000101010000",
            TOWN,
            "y",
        )),
        "strictly lower",
    );
    refused(
        d,
        &args(&issue(
            d,
            "town",
            "town",
            "假镇",
            "43601211000000101010000",
            TOWN,
            "y",
        )),
        "strictly lower",
    );
    // Unreadable and garbage keys.
    std::fs::write(d.join("garbage.key"), "not a key").unwrap();
    std::fs::copy(d.join("town.pem"), d.join("garbage.pem")).unwrap();
    refused(
        d,
        &args(&issue(
            d,
            "garbage",
            "village",
            "村",
            "43601211002010101010000",
            VILLAGE,
            "z",
        )),
        "not an EBS Ed25519 private key",
    );
    refused(
        d,
        &args(&issue(
            d,
            "missing",
            "village",
            "村",
            "43601211002010101010000",
            VILLAGE,
            "z",
        )),
        "cannot read key file",
    );
    // A key that does not belong to the issuer's certificate.
    std::fs::copy(d.join("district.key"), d.join("mixed.key")).unwrap();
    std::fs::copy(d.join("town.pem"), d.join("mixed.pem")).unwrap();
    refused(
        d,
        &args(&issue(
            d,
            "mixed",
            "village",
            "村",
            "43601211002010101010000",
            VILLAGE,
            "z",
        )),
        "is not the key of",
    );
    // Malformed codes.
    refused(
        d,
        &args(&issue(d, "town", "village", "村", "123", VILLAGE, "z")),
        "resource code must be 23 digits",
    );
    refused(
        d,
        &args(&issue(
            d,
            "town",
            "village",
            "村",
            "43601211002010101010000",
            "3601211002",
            "z",
        )),
        "area code must be 12 digits",
    );
    // Never overwrites a key.
    refused(
        d,
        &args(&issue(
            d,
            "district",
            "town",
            "蛟桥镇",
            "43601211000000101010000",
            TOWN,
            "town",
        )),
        "already exists",
    );
    // A town cannot sign revocation lists.
    refused(
        d,
        &[
            "revoke",
            "--issuer-key",
            "town.key",
            "--issuer-cert",
            "town.pem",
            "--serial",
            "1",
            "--out",
            "c.pem",
        ],
        "only the root or a district",
    );
    refused(
        d,
        &[
            "revoke",
            "--issuer-key",
            "district.key",
            "--issuer-cert",
            "district.pem",
            "--serial",
            "xyz",
            "--out",
            "c.pem",
        ],
        "not hex",
    );
    // A chain from another root.
    ok(
        d,
        &[
            "root",
            "--name",
            "假根",
            "--code",
            "43600000000000101010000",
            "--scope",
            "360000000000",
            "--key",
            "rogue.key",
            "--cert",
            "rogue.pem",
        ],
    );
    ok(
        d,
        &args(&issue(
            d,
            "rogue",
            "district",
            "假区",
            "43601210000000101010000",
            COUNTY,
            "rogue-district",
        )),
    );
    refused(
        d,
        &[
            "verify",
            "--root",
            "root.pem",
            "--chain",
            "rogue-district.pem",
        ],
        "names issuer",
    );
    refused(d, &["show", "missing.pem"], "cannot read");
    refused(
        d,
        &["verify", "--root", "town.pem", "--chain", "town.pem"],
        "not a root certificate",
    );
}

#[test]
fn an_expired_issuer_cannot_issue() {
    use certs::cert::{CertBody, Certificate};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(
        d,
        &[
            "root",
            "--name",
            "根",
            "--code",
            "43600000000000101010000",
            "--scope",
            "360000000000",
            "--key",
            "root.key",
            "--cert",
            "root.pem",
        ],
    );
    // Forge a district whose validity has ended (the root signs whatever it is given).
    let root_key = certs::SecretKey::read_file(&d.join("root.key")).unwrap();
    let root = Certificate::all_from_pem(&std::fs::read_to_string(d.join("root.pem")).unwrap())
        .unwrap()
        .remove(0);
    let key = certs::SecretKey::generate();
    let now = certs::time::unix_now();
    let old = Certificate::sign_body(
        CertBody {
            serial: 42,
            tier: certs::Tier::District,
            name: "过期区".into(),
            resource_code: "43601210000000101010000".parse().unwrap(),
            scope: vec![COUNTY.parse().unwrap()],
            // Inside the root's validity (it began 60 s before it was made), ended already.
            not_before: now - 50,
            not_after: now - 5,
            public_key: key.public(),
            issuer_serial: root.serial(),
        },
        &root_key,
    );
    key.write_file(&d.join("old.key")).unwrap();
    std::fs::write(d.join("old.pem"), old.to_pem()).unwrap();
    refused(
        d,
        &args(&issue(
            d,
            "old",
            "town",
            "镇",
            "43601211000000101010000",
            TOWN,
            "t",
        )),
        "expired or is not yet valid",
    );
    refused(
        d,
        &["verify", "--root", "root.pem", "--chain", "old.pem"],
        "expired",
    );
}
