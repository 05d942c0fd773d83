//! Cerbos, a stateless policy decision point, as a peer measured in the same
//! run on the same machine (issue 19). Its Linux binary comes from npm
//! (`@cerbos/cerbos-linux-x64`), installed once into cargo's target directory;
//! where npm or the network is missing the benchmark says so and leaves the
//! Cerbos column out.
//!
//! It runs as its own process with a disk policy store holding one resource
//! policy, for kind `organization`, generated from orgd's database catalogue
//! (`role_permissions` with `permission_implications` applied), so that it
//! grants what orgd's built-in roles grant and cannot drift from them. As a
//! stateless PDP it is told the principal's roles in each request: the callers
//! pass a member's roles in the organization asked about (read from the
//! seeded `membership_roles`), and a non-member holds only `user`, which the
//! policy grants nothing. (Extra per-member grants, `membership_permissions`,
//! are not passed: roles only.)
//!
//! The request is encoded by hand-written prost structs of just the fields it
//! uses, with field numbers from cerbos's own protos
//! (api/public/cerbos/request/v1/request.proto, engine/v1/engine.proto and
//! response/v1/response.proto).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use tokio_postgres::Client;
use tonic::client::Grpc;
use tonic::transport::Channel;

use crate::dataset::Dataset;

/// The npm package with the Linux binary, and its version.
const PACKAGE: &str = "@cerbos/cerbos-linux-x64";
pub const VERSION: &str = "0.55.0";
/// The resource kind of the policy.
const KIND: &str = "organization";
/// The role a principal holds when it is not a member of the organization.
const OUTSIDER: &str = "user";
const CHECK_RESOURCES: &str = "/cerbos.svc.v1.CerbosService/CheckResources";
/// cerbos.effect.v1.Effect.
pub const EFFECT_ALLOW: i32 = 1;
pub const EFFECT_DENY: i32 = 2;

/// cerbos.request.v1.CheckResourcesRequest, the fields used.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckResourcesRequest {
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(message, optional, tag = "3")]
    pub principal: Option<Principal>,
    #[prost(message, repeated, tag = "4")]
    pub resources: Vec<ResourceEntry>,
}

/// cerbos.engine.v1.Principal, the fields used.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Principal {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, repeated, tag = "3")]
    pub roles: Vec<String>,
}

/// cerbos.request.v1.CheckResourcesRequest.ResourceEntry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceEntry {
    #[prost(string, repeated, tag = "1")]
    pub actions: Vec<String>,
    #[prost(message, optional, tag = "2")]
    pub resource: Option<Resource>,
}

/// cerbos.engine.v1.Resource, the fields used.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(string, tag = "3")]
    pub id: String,
}

/// cerbos.response.v1.CheckResourcesResponse, the fields read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckResourcesResponse {
    #[prost(message, repeated, tag = "2")]
    pub results: Vec<ResultEntry>,
}

/// cerbos.response.v1.CheckResourcesResponse.ResultEntry, the fields read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResultEntry {
    /// Action → cerbos.effect.v1.Effect.
    #[prost(map = "string, int32", tag = "2")]
    pub actions: HashMap<String, i32>,
}

/// One check: may the principal (`id`, holding `roles`) do `action` on the
/// organization `organization`? Answers the effect.
pub async fn check(
    grpc: &mut Grpc<Channel>,
    id: &str,
    roles: Vec<String>,
    organization: &str,
    action: &str,
) -> Result<i32, tonic::Status> {
    let message = CheckResourcesRequest {
        request_id: String::new(),
        principal: Some(Principal {
            id: id.to_owned(),
            roles,
        }),
        resources: vec![ResourceEntry {
            actions: vec![action.to_owned()],
            resource: Some(Resource {
                kind: KIND.to_owned(),
                id: organization.to_owned(),
            }),
        }],
    };
    grpc.ready()
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    let codec = tonic_prost::ProstCodec::<CheckResourcesRequest, CheckResourcesResponse>::default();
    let path = http::uri::PathAndQuery::from_static(CHECK_RESOURCES);
    let response = grpc
        .unary(tonic::Request::new(message), path, codec)
        .await?
        .into_inner();
    match &response.results[..] {
        [result] => result
            .actions
            .get(action)
            .copied()
            .ok_or_else(|| tonic::Status::internal("Cerbos answered no effect for the action")),
        _ => Err(tonic::Status::internal(
            "Cerbos answered other than one result",
        )),
    }
}

/// orgd's built-in roles and the permissions each grants, implications applied.
pub struct Catalogue {
    grants: BTreeMap<String, BTreeSet<String>>,
}

impl Catalogue {
    /// Read from orgd's database: `role_permissions`, and what each of those
    /// permissions implies (`permission_implications` holds the closure).
    pub async fn read(db: &Client) -> anyhow::Result<Self> {
        let mut grants = BTreeMap::new();
        for row in db
            .query(
                "SELECT role, permission FROM role_permissions
                 UNION
                 SELECT r.role, i.implies FROM role_permissions r
                 JOIN permission_implications i ON i.permission = r.permission",
                &[],
            )
            .await?
        {
            grants
                .entry(row.get::<_, String>(0))
                .or_insert_with(BTreeSet::new)
                .insert(row.get::<_, String>(1));
        }
        if grants.contains_key(OUTSIDER) {
            bail!(
                "orgd has a role named {OUTSIDER:?}, the Cerbos principal's role for non-members"
            );
        }
        if grants.len() > 32 {
            bail!("more than 32 roles: the benchmark keeps a member's roles in a u32");
        }
        Ok(Catalogue { grants })
    }

    /// The resource policy: one rule per role, allowing what it grants.
    fn policy(&self) -> String {
        let quoted = |s: &str| serde_json::to_string(s).expect("a string serializes");
        let mut yaml = format!(
            "# Generated by orgd's load benchmark from role_permissions and permission_implications.\n\
             apiVersion: api.cerbos.dev/v1\n\
             resourcePolicy:\n  version: default\n  resource: {KIND}\n  rules:\n"
        );
        for (role, permissions) in &self.grants {
            let actions: Vec<String> = permissions.iter().map(|p| quoted(p)).collect();
            yaml.push_str(&format!(
                "    - actions: [{}]\n      effect: EFFECT_ALLOW\n      roles: [{}]\n",
                actions.join(", "),
                quoted(role)
            ));
        }
        yaml
    }

    /// A (role, permission) the catalogue grants, and one it does not.
    fn granted_and_not(&self) -> anyhow::Result<[Grant<'_>; 2]> {
        let all: BTreeSet<&String> = self.grants.values().flatten().collect();
        let granted = self
            .grants
            .iter()
            .find_map(|(role, held)| Some((role.as_str(), held.first()?.as_str())))
            .context("no role grants anything")?;
        let not = self
            .grants
            .iter()
            .find_map(|(role, held)| {
                let missing = all.iter().find(|p| !held.contains(p.as_str()))?;
                Some((role.as_str(), missing.as_str()))
            })
            .context("every role grants everything")?;
        Ok([granted, not])
    }
}

/// A role and a permission.
type Grant<'a> = (&'a str, &'a str);

/// Each team member's roles, as the callers pass them to Cerbos.
pub struct Roles {
    names: Vec<String>,
    /// (team, user) → a bit per role of `names`.
    held: HashMap<(u32, u32), u32>,
}

impl Roles {
    /// The seeded members' roles in the team organizations of `data`.
    pub async fn read(db: &Client, data: &Dataset, catalogue: &Catalogue) -> anyhow::Result<Self> {
        let names: Vec<String> = catalogue.grants.keys().cloned().collect();
        let teams: HashMap<&str, u32> = (0..)
            .zip(&data.teams)
            .map(|(i, team)| (team.slug.as_str(), i))
            .collect();
        let users: HashMap<uuid::Uuid, u32> = (0..)
            .zip(&data.users)
            .map(|(i, user)| (user.id, i))
            .collect();
        let mut held = HashMap::new();
        for row in db
            .query(
                "SELECT o.slug, r.user_id, r.role FROM membership_roles r
                 JOIN organizations o ON o.id = r.org_id WHERE o.personal_owner_id IS NULL",
                &[],
            )
            .await?
        {
            let (Some(&team), Some(&user)) = (
                teams.get(row.get::<_, &str>(0)),
                users.get(&row.get::<_, uuid::Uuid>(1)),
            ) else {
                continue;
            };
            let role: &str = row.get(2);
            let bit = names
                .iter()
                .position(|name| name == role)
                .with_context(|| format!("role {role} is not in the catalogue"))?;
            *held.entry((team, user)).or_insert(0) |= 1 << bit;
        }
        Ok(Roles { names, held })
    }

    /// What the principal `user` holds in `team`, as Cerbos is told.
    pub fn of(&self, team: usize, user: usize) -> Vec<String> {
        match self.held.get(&(team as u32, user as u32)) {
            Some(&bits) => self
                .names
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, name)| name.clone())
                .collect(),
            None => vec![OUTSIDER.to_owned()],
        }
    }
}

/// The Cerbos binary, installed with npm into cargo's target directory the
/// first time; `None`, having said why, where it cannot be.
pub fn install() -> Option<PathBuf> {
    let skip = |why: String| {
        eprintln!("bench: {why}: skipping the Cerbos column");
        None
    };
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return skip(format!("{PACKAGE} runs on x86-64 Linux only"));
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(target)
        .join(format!("cerbos-{VERSION}"));
    let binary = dir
        .join("node_modules")
        .join(PACKAGE)
        .join("cerbos-linux-x64");
    if binary.is_file() {
        return Some(binary);
    }
    eprintln!(
        "bench: installing {PACKAGE}@{VERSION} with npm into {}",
        dir.display()
    );
    if let Err(err) = std::fs::create_dir_all(&dir) {
        return skip(format!("cannot create {}: {err}", dir.display()));
    }
    let output = Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(&dir)
        .args(["--no-save", "--no-package-lock", "--no-audit", "--no-fund"])
        .arg(format!("{PACKAGE}@{VERSION}"))
        .stdin(Stdio::null())
        .output();
    match output {
        Err(err) => skip(format!("npm did not run ({err})")),
        Ok(output) if !output.status.success() => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last: Vec<&str> = stderr.lines().rev().take(5).collect();
            let last: Vec<&str> = last.into_iter().rev().collect();
            skip(format!(
                "npm install {PACKAGE}@{VERSION} failed ({}): {}",
                output.status,
                last.join(" / ")
            ))
        }
        Ok(_) if !binary.is_file() => skip(format!("npm installed no {}", binary.display())),
        Ok(_) => Some(binary),
    }
}

/// The Cerbos server, run as its own process.
pub struct Cerbos {
    child: Child,
    pub addr: String,
}

impl Cerbos {
    /// Starts `binary` with the catalogue's policy in a disk store under
    /// `work`: gRPC on a free localhost port without TLS, no audit log, only
    /// errors logged, no telemetry.
    pub fn start(binary: &Path, catalogue: &Catalogue, work: &Path) -> anyhow::Result<Self> {
        let policies = work.join("policies");
        std::fs::create_dir_all(&policies)?;
        std::fs::write(policies.join("organization.yaml"), catalogue.policy())?;
        let free = || -> anyhow::Result<std::net::SocketAddr> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
        };
        let (grpc, http) = (free()?, free()?);
        let config = work.join("conf.yaml");
        std::fs::write(
            &config,
            format!(
                "server:\n  grpcListenAddr: \"{grpc}\"\n  httpListenAddr: \"{http}\"\n\
                 storage:\n  driver: disk\n  disk:\n    directory: {}\n    watchForChanges: false\n\
                 audit:\n  enabled: false\n",
                serde_json::to_string(&policies.to_string_lossy())?
            ),
        )?;
        let log = std::fs::File::create(work.join("cerbos.log"))?;
        let child = Command::new(binary)
            .arg("server")
            .arg(format!("--config={}", config.display()))
            .arg("--log-level=error")
            .env("CERBOS_NO_TELEMETRY", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Cerbos {
            child,
            addr: grpc.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails unless Cerbos allows what the catalogue grants and denies what it
    /// does not, a member's and a non-member's: the column measures decisions.
    pub async fn check_decisions(channel: &Channel, catalogue: &Catalogue) -> anyhow::Result<()> {
        let [(role, granted), (other, not_granted)] = catalogue.granted_and_not()?;
        let mut grpc = Grpc::new(channel.clone());
        let cases = [
            (role, granted, EFFECT_ALLOW),
            (other, not_granted, EFFECT_DENY),
            (OUTSIDER, granted, EFFECT_DENY),
        ];
        for (role, action, expected) in cases {
            let effect = check(
                &mut grpc,
                "bench-probe",
                vec![role.to_owned()],
                "bench-0",
                action,
            )
            .await
            .with_context(|| format!("Cerbos CheckResources ({role} asking {action})"))?;
            if effect != expected {
                bail!(
                    "Cerbos answered effect {effect} to {role} asking {action}, not {expected} as orgd's catalogue says"
                );
            }
        }
        eprintln!(
            "bench: Cerbos allows {role} {granted} and denies {other} {not_granted} and a non-member {granted}, as orgd's catalogue says"
        );
        Ok(())
    }
}

impl Drop for Cerbos {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
