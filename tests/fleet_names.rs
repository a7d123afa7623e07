//! Issue 13 §4: tenants from discovery sources are checked like listed ones (an id found twice, two tenants on one
//! schema once PostgreSQL truncates names to 63 bytes, names longer than 63 bytes), and a tenants-file server's
//! password may come from libpq's password file, with connection errors that say where Flotilla looked.

use std::os::unix::fs::PermissionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fleet_support::{Fleet, Revisions, REPO_HEAD};

const SERVER: &str = "[[servers]]\nname = \"local\"\nurl = \"{url}\"\n";

/// Writes `body` (`{url}` replaced) as the tenants file, runs `fleet upgrade head`, expects exit 2 with each of
/// `expected` on stderr, and checks that no tenant was touched.
async fn assert_refused(fleet: &Fleet, body: &str, expected: &[String]) {
    std::fs::write(&fleet.tenants_file, body.replace("{url}", fleet.db.url())).unwrap();
    let out = fleet.upgrade(&[]).assert_code(2);
    for text in expected {
        assert!(
            out.stderr.contains(text.as_str()),
            "stderr lacks `{text}`\n{}",
            out.report()
        );
    }
    let versions = fleet.versions().await;
    assert!(
        versions.values().all(Vec::is_empty),
        "a tenant was migrated: {versions:?}"
    );
}

/// Before issue 13, the second source's tenants silently collapsed into the first's.
#[tokio::test]
async fn fleet_names_tenant_discovered_twice_is_refused() {
    let fleet = Fleet::new("fleet_names_twice", 2, 0, Revisions::Repo, 2);
    let body = format!(
        "{SERVER}\n[[sources]]\nserver = \"local\"\nschemas_like = \"tenant\\\\_%\"\n\n\
         [[sources]]\nserver = \"local\"\nschemas_like = \"tenant_000%\"\n"
    );
    let path = fleet.tenants_file.display();
    assert_refused(
        &fleet,
        &body,
        &[format!(
            "tenant `tenant_0001` is defined twice: by the source at {path}:5:1 (schemas_like \"tenant\\\\_%\" on \
             server local) and by the source at {path}:9:1 (schemas_like \"tenant_000%\" on server local)"
        )],
    )
    .await;
}

/// A query source returning two names that PostgreSQL reads as one schema: both are named.
#[tokio::test]
async fn fleet_names_discovered_names_colliding_after_truncation_are_refused() {
    let fleet = Fleet::new("fleet_names_trunc", 1, 0, Revisions::Repo, 2);
    let long = |tail: &str| format!("{}{tail}", "é".repeat(31));
    let query = format!(
        "SELECT 'one' AS id, '{}' AS schema UNION ALL SELECT 'two', '{}' UNION ALL SELECT 'ok', 'tenant_0001'",
        long("s_one"),
        long("s_two")
    );
    let body = format!("{SERVER}\n[[sources]]\nserver = \"local\"\nquery = \"{query}\"\n");
    let origin = format!(
        "the source at {}:5:1 (query on server local)",
        fleet.tenants_file.display()
    );
    assert_refused(
        &fleet,
        &body,
        &[
            format!(
                "{origin} found tenant `one` whose schema `{}` is not a valid PostgreSQL identifier: it is longer \
                 than 63 bytes",
                long("s_one")
            ),
            format!(
                "tenant `two` ({origin}) uses the same schema as tenant `one` ({origin}) on server `local`: `{}` and \
                 `{}` (one name once PostgreSQL truncates names to 63 bytes)",
                long("s_one"),
                long("s_two")
            ),
        ],
    )
    .await;
}

/// The shipped example's mistake: a listed tenant that a source also finds under another id.
#[tokio::test]
async fn fleet_names_listed_tenant_also_discovered_is_refused() {
    let fleet = Fleet::new("fleet_names_listed", 2, 0, Revisions::Repo, 2);
    let body = format!(
        "{SERVER}\n[[tenants]]\nid = \"acme\"\nserver = \"local\"\nschema = \"tenant_0001\"\n\n\
         [[sources]]\nserver = \"local\"\nschemas_like = \"tenant_%\"\n"
    );
    let path = fleet.tenants_file.display();
    assert_refused(
        &fleet,
        &body,
        &[format!(
            "tenant `tenant_0001` (the source at {path}:10:1 (schemas_like \"tenant_%\" on server local)) uses the \
             same schema as tenant `acme` (the [[tenants]] entry at {path}:5:1) on server `local`: `tenant_0001`"
        )],
    )
    .await;
    // A listed tenant with a discovered tenant's id still replaces it.
    let body = format!(
        "{SERVER}\n[[tenants]]\nid = \"tenant_0001\"\nserver = \"local\"\nschema = \"tenant_0001\"\n\
         tags = {{ listed = \"yes\" }}\n\n[[sources]]\nserver = \"local\"\nschemas_like = \"tenant_%\"\n"
    );
    std::fs::write(&fleet.tenants_file, body.replace("{url}", fleet.db.url())).unwrap();
    fleet.upgrade(&["--tag", "listed=yes"]).assert_success();
    let versions = fleet.versions().await;
    assert_eq!(versions["tenant_0001"], [REPO_HEAD]);
    assert!(versions["tenant_0002"].is_empty(), "{versions:?}");
}

/// The test cluster's pg_hba.conf (scripts/pg-cluster) asks members of this role for a scram password on TCP.
const PASSWORD_GROUP: &str = "flotilla_password_login";

/// A server whose password is only in a password file: refused without it (the error lists where Flotilla
/// looked), ignored while others may read the file, used once it is private.
#[tokio::test]
async fn fleet_names_password_from_pgpass_file() {
    let fleet = Fleet::new("fleet_names_pgpass", 2, 0, Revisions::Repo, 2);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let role = format!("flotilla_pw_{}_{}", std::process::id(), nanos % 1_000_000_000);
    let secret = format!("Pw-{nanos}-q:z");
    fleet.db.execute(&format!(
        "DO $$ BEGIN CREATE ROLE {PASSWORD_GROUP} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;\n\
         CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{secret}' IN ROLE {PASSWORD_GROUP};"
    ));
    let url = fleet.db.url().replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(url, fleet.db.url(), "the harness url names the postgres user");
    let body = format!(
        "{}\n[[tenants]]\nid = \"t1\"\nserver = \"local\"\nschema = \"tenant_0001\"\n",
        SERVER.replace("{url}", &url)
    );
    std::fs::write(&fleet.tenants_file, body).unwrap();
    let pgpass = fleet.project.path().join("pgpass");
    let upgrade = |expected: i32| {
        let mut cmd = fleet.upgrade(&[]);
        cmd.env("PGPASSFILE", &pgpass);
        cmd.assert_code(expected)
    };

    let out = upgrade(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    let looked = format!(
        "no password: server `local` sets neither password_env nor password_file, and password file `{}` does not \
         exist",
        pgpass.display()
    );
    assert!(text.contains(&looked), "{}", out.report());

    // libpq's format: the `:` in the password is escaped; the first matching line wins.
    let host_port = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    let (host, port) = host_port.split_once(':').unwrap();
    let db = fleet.db.name();
    std::fs::write(
        &pgpass,
        format!(
            "# test\nother:{port}:*:*:wrong\n{host}:{port}:{db}:{role}:{}\n*:*:*:*:wrong\n",
            secret.replace(':', "\\:")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = upgrade(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("password file ignored: it has group or world access (mode 0644)"),
        "{}",
        out.report()
    );

    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = upgrade(0);
    assert!(
        !format!("{}{}", out.stdout, out.stderr).contains(&secret),
        "{}",
        out.report()
    );
    assert_eq!(fleet.versions().await["tenant_0001"], [REPO_HEAD]);

    // A wrong password in the file: the server's refusal says which line it came from.
    std::fs::write(&pgpass, format!("*:*:*:{role}:wrong\n")).unwrap();
    let out = fleet
        .fleet(&["downgrade", "base", "--progress", "none"])
        .env("PGPASSFILE", &pgpass)
        .assert_code(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("28P01"), "{}", out.report());
    assert!(
        text.contains(&format!("the password came from `{}` line 1", pgpass.display())),
        "{}",
        out.report()
    );
    fleet.db.execute(&format!(
        "REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}; DROP ROLE {role}"
    ));
}
