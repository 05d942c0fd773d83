//! What the callers do: each workload as an RPC through orgd, and each read
//! workload as the same store calls — hence the same SQL — straight against
//! PostgreSQL, which is the ceiling the RPC is held against.

use std::sync::Arc;

use orgd::auth::{Claims, mint_token};
use orgd::domain::{OrgRef, PageRequest, UserName};
use orgd::pb;
use orgd::pb::member_service_client::MemberServiceClient;
use orgd::pb::org_service_client::OrgServiceClient;
use orgd::pb::permission_service_client::PermissionServiceClient;
use orgd::store::Store;
use orgd::store::checks::Question;
use orgd::store::users::Identity;
use tonic::client::Grpc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::cerbos::{self, Roles};
use crate::dataset::Dataset;

pub const JWT_SECRET: &str = "orgd-bench-secret-not-for-production";
pub const JWT_ISSUER: &str = "orgd-dev";
pub const JWT_AUDIENCE: &str = "orgd";
/// The backend service the PermissionService callers sign in as.
pub const SERVICE_SUBJECT: &str = "bench-service";

/// Permissions a backend service asks about.
const CHECKED_PERMISSIONS: [&str; 4] = [
    "members.read",
    "billing.manage",
    "org.update",
    "projects.create",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    CheckPermission,
    /// PermissionService.CheckPermission asked by a backend service's own
    /// token, about any organization, naming users by subject.
    ServiceCheck,
    /// PermissionService.CheckPermissions of 10 checks, likewise.
    ServiceBatch10,
    /// PermissionService.CheckPermissions of 100 checks, likewise.
    ServiceBatch100,
    /// Cerbos's CheckResources (a peer, not orgd): the service workload's
    /// questions, one resource and action per call, the principal's roles in
    /// the request (`cerbos.rs`).
    CerbosCheck,
    GetOrganization,
    ListMembers,
    /// 80% reads (CheckPermission, GetOrganization, ListMembers) and 20% writes
    /// (UpdateOrganization, UpdateMember).
    Mixed,
}

impl Workload {
    pub const ALL: [Workload; 8] = [
        Workload::CheckPermission,
        Workload::ServiceCheck,
        Workload::ServiceBatch10,
        Workload::ServiceBatch100,
        Workload::CerbosCheck,
        Workload::GetOrganization,
        Workload::ListMembers,
        Workload::Mixed,
    ];

    /// Whether the workload's calls also run as direct SQL (the reads).
    pub fn has_direct_path(self) -> bool {
        !matches!(self, Workload::Mixed | Workload::CerbosCheck)
    }

    /// Whether the workload drives Cerbos instead of orgd.
    pub fn is_cerbos(self) -> bool {
        self == Workload::CerbosCheck
    }

    pub fn label(self) -> &'static str {
        match self {
            Workload::CheckPermission => "CheckPermission",
            Workload::ServiceCheck => "CheckPermission (service)",
            Workload::ServiceBatch10 => "CheckPermissions (service, 10 checks/call)",
            Workload::ServiceBatch100 => "CheckPermissions (service, 100 checks/call)",
            Workload::CerbosCheck => "Cerbos CheckResources (peer, 1 check/call)",
            Workload::GetOrganization => "GetOrganization",
            Workload::ListMembers => "ListMembers (50/page)",
            Workload::Mixed => "Mixed 80% read / 20% write",
        }
    }

    /// The checks of one CheckPermissions call of a batch workload.
    pub fn batch_size(self) -> Option<usize> {
        match self {
            Workload::ServiceBatch10 => Some(10),
            Workload::ServiceBatch100 => Some(100),
            _ => None,
        }
    }
}

/// The RPC a call made, for latencies by RPC in the mixed load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    CheckPermission,
    ServiceCheck,
    CheckPermissions,
    CerbosCheck,
    GetOrganization,
    ListMembers,
    UpdateOrganization,
    UpdateMember,
}

impl Rpc {
    /// The RPCs of the mixed load.
    pub const MIXED: [Rpc; 5] = [
        Rpc::CheckPermission,
        Rpc::GetOrganization,
        Rpc::ListMembers,
        Rpc::UpdateOrganization,
        Rpc::UpdateMember,
    ];
}

/// An API token holding `permissions.check` in one team organization.
pub struct ServiceToken {
    pub team: usize,
    pub secret: String,
    pub bearer: MetadataValue<Ascii>,
}

/// Everything callers pick from, shared.
pub struct Fixture {
    pub data: Dataset,
    /// `Bearer <jwt>` of each user, in `data.users` order.
    pub bearers: Vec<MetadataValue<Ascii>>,
    pub tokens: Vec<ServiceToken>,
    /// `Bearer <jwt>` of the backend service `SERVICE_SUBJECT`.
    pub service_bearer: MetadataValue<Ascii>,
    /// Members' roles as the Cerbos callers pass them, when Cerbos runs.
    pub cerbos_roles: Option<Roles>,
    /// Indexes of the teams with more than a page of members.
    pub large_teams: Vec<usize>,
    pub store: Store,
}

impl Fixture {
    pub fn new(data: Dataset, store: Store) -> anyhow::Result<Self> {
        let claims = |subject: &str| {
            Claims::new(
                JWT_ISSUER,
                JWT_AUDIENCE,
                subject,
                std::time::Duration::from_secs(24 * 3600),
            )
        };
        let bearer = |claims: &Claims| -> anyhow::Result<MetadataValue<Ascii>> {
            let jwt = mint_token(JWT_SECRET.as_bytes(), claims)?;
            Ok(format!("Bearer {jwt}").parse()?)
        };
        let bearers = data
            .users
            .iter()
            .map(|user| {
                let mut claims = claims(&user.subject);
                claims.email = Some(user.email.clone());
                claims.name = Some(user.display_name.clone());
                claims.email_verified = true;
                bearer(&claims)
            })
            .collect::<anyhow::Result<_>>()?;
        let large_teams = data.large_teams().map(|(index, _)| index).collect();
        Ok(Fixture {
            service_bearer: bearer(&claims(SERVICE_SUBJECT))?,
            data,
            bearers,
            tokens: Vec::new(),
            cerbos_roles: None,
            large_teams,
            store,
        })
    }

    fn identity(&self, user: usize) -> Identity {
        let user = &self.data.users[user];
        Identity {
            subject: user.subject.clone(),
            email: user.email.clone(),
            email_verified: true,
            display_name: user.display_name.clone(),
        }
    }
}

/// A small deterministic generator, one per caller (SplitMix64).
pub struct Picker(u64);

/// SplitMix64's increment, an odd constant.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl Picker {
    /// Seeds are mixed before use: SplitMix64 steps through one sequence by
    /// `GOLDEN_GAMMA`, so states of `seed × GOLDEN_GAMMA` would put caller
    /// `i + 2` exactly two steps behind caller `i`, and all callers would replay
    /// a few hundred requests between them.
    pub fn new(seed: u64) -> Self {
        Picker(mix(seed))
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        (mix(self.0) % n as u64) as usize
    }
}

/// SplitMix64's output function: nearby inputs give unrelated outputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `message` with the caller's bearer token.
fn signed<T>(message: T, bearer: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request
}

/// An update mask of one field.
fn mask(path: &str) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: vec![path.to_owned()],
    })
}

/// One concurrent caller: its own clients (on a shared connection) and picker.
pub struct Caller {
    orgs: OrgServiceClient<Channel>,
    members: MemberServiceClient<Channel>,
    permissions: PermissionServiceClient<Channel>,
    /// Cerbos's CheckResources, when the channel is Cerbos's.
    cerbos: Grpc<Channel>,
    fixture: Arc<Fixture>,
    pick: Picker,
    /// The direct path's store, when not the fixture's (see `using`).
    store: Option<Store>,
}

/// One request's parameters, drawn before it is timed.
enum Call {
    Check {
        token: usize,
        user: usize,
        permission: &'static str,
    },
    /// Questions of a backend service: (team, user, permission) each.
    ServiceChecks(Vec<(usize, usize, &'static str)>),
    /// The same question to Cerbos: (team, user, permission).
    Cerbos(usize, usize, &'static str),
    Get {
        team: usize,
        user: usize,
    },
    List {
        team: usize,
        user: usize,
    },
    UpdateOrg {
        team: usize,
        user: usize,
    },
    UpdateMember {
        team: usize,
        member: usize,
        role: &'static str,
    },
}

impl Call {
    fn rpc(&self) -> Rpc {
        match self {
            Call::Check { .. } => Rpc::CheckPermission,
            Call::ServiceChecks(questions) if questions.len() == 1 => Rpc::ServiceCheck,
            Call::ServiceChecks(_) => Rpc::CheckPermissions,
            Call::Cerbos(..) => Rpc::CerbosCheck,
            Call::Get { .. } => Rpc::GetOrganization,
            Call::List { .. } => Rpc::ListMembers,
            Call::UpdateOrg { .. } => Rpc::UpdateOrganization,
            Call::UpdateMember { .. } => Rpc::UpdateMember,
        }
    }
}

impl Caller {
    pub fn new(channel: Channel, fixture: Arc<Fixture>, seed: u64) -> Self {
        Caller {
            orgs: OrgServiceClient::new(channel.clone()),
            members: MemberServiceClient::new(channel.clone()),
            permissions: PermissionServiceClient::new(channel.clone()),
            cerbos: Grpc::new(channel),
            fixture,
            pick: Picker::new(seed),
            store: None,
        }
    }

    /// This caller's direct path goes through `store` instead of the
    /// fixture's (`--explain` reads plans from a session of its own).
    pub fn using(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    fn draw(&mut self, workload: Workload) -> Call {
        let fixture = &self.fixture;
        let pick = &mut self.pick;
        let member_of = |pick: &mut Picker, team: usize| {
            let members = &fixture.data.teams[team].members;
            members[pick.below(members.len())]
        };
        let any_team = |pick: &mut Picker| pick.below(fixture.data.teams.len());
        let large_team =
            |pick: &mut Picker| fixture.large_teams[pick.below(fixture.large_teams.len())];
        let check = |pick: &mut Picker| {
            let token = pick.below(fixture.tokens.len());
            // Mostly members of the token's organization, sometimes anyone.
            let user = if pick.below(4) == 0 {
                pick.below(fixture.data.users.len())
            } else {
                member_of(pick, fixture.tokens[token].team)
            };
            let permission = CHECKED_PERMISSIONS[pick.below(CHECKED_PERMISSIONS.len())];
            Call::Check {
                token,
                user,
                permission,
            }
        };
        // Any team, about mostly its members, sometimes anyone.
        let service_question = |pick: &mut Picker| {
            let team = any_team(pick);
            let user = if pick.below(4) == 0 {
                pick.below(fixture.data.users.len())
            } else {
                member_of(pick, team)
            };
            (
                team,
                user,
                CHECKED_PERMISSIONS[pick.below(CHECKED_PERMISSIONS.len())],
            )
        };
        let get = |pick: &mut Picker| {
            let team = any_team(pick);
            Call::Get {
                team,
                user: member_of(pick, team),
            }
        };
        let list = |pick: &mut Picker| {
            let team = large_team(pick);
            Call::List {
                team,
                user: member_of(pick, team),
            }
        };
        match workload {
            Workload::CheckPermission => check(pick),
            Workload::ServiceCheck | Workload::ServiceBatch10 | Workload::ServiceBatch100 => {
                let size = workload.batch_size().unwrap_or(1);
                Call::ServiceChecks((0..size).map(|_| service_question(pick)).collect())
            }
            Workload::CerbosCheck => {
                let (team, user, permission) = service_question(pick);
                Call::Cerbos(team, user, permission)
            }
            Workload::GetOrganization => get(pick),
            Workload::ListMembers => list(pick),
            Workload::Mixed => match pick.below(100) {
                0..30 => check(pick),
                30..55 => get(pick),
                55..80 => list(pick),
                80..90 => {
                    // The owner or the admin.
                    let team = any_team(pick);
                    let user = fixture.data.teams[team].members[pick.below(2)];
                    Call::UpdateOrg { team, user }
                }
                _ => {
                    let team = any_team(pick);
                    let members = &fixture.data.teams[team].members;
                    Call::UpdateMember {
                        team,
                        member: members[2 + pick.below(members.len() - 2)],
                        role: ["developer", "viewer"][pick.below(2)],
                    }
                }
            },
        }
    }

    /// One RPC through orgd; says which.
    pub async fn rpc(&mut self, workload: Workload) -> Result<Rpc, tonic::Status> {
        let call = self.draw(workload);
        let rpc = call.rpc();
        let fixture = self.fixture.clone();
        let slug = |team: usize| &fixture.data.teams[team].slug;
        match call {
            Call::Check {
                token,
                user,
                permission,
            } => {
                let token = &fixture.tokens[token];
                let message = pb::CheckPermissionRequest {
                    user: format!("users/{}", fixture.data.users[user].id),
                    organization: format!("organizations/{}", slug(token.team)),
                    permission: permission.to_owned(),
                };
                self.orgs
                    .check_permission(signed(message, &token.bearer))
                    .await?;
            }
            Call::ServiceChecks(questions) => {
                let bearer = &fixture.service_bearer;
                let ask = |(team, user, permission): (usize, usize, &str)| {
                    (
                        format!("organizations/{}", slug(team)),
                        format!("subjects/{}", fixture.data.users[user].subject),
                        permission.to_owned(),
                    )
                };
                if rpc == Rpc::ServiceCheck {
                    let (organization, user, permission) = ask(questions[0]);
                    let message = pb::CheckPermissionRequest {
                        user,
                        organization,
                        permission,
                    };
                    self.permissions
                        .check_permission(signed(message, bearer))
                        .await?;
                } else {
                    let checks = questions
                        .iter()
                        .enumerate()
                        .map(|(i, question)| {
                            let (organization, user, permission) = ask(*question);
                            pb::PermissionCheck {
                                correlation_id: i.to_string(),
                                organization,
                                user,
                                permission,
                            }
                        })
                        .collect();
                    let message = pb::CheckPermissionsRequest { checks };
                    let answered = self
                        .permissions
                        .check_permissions(signed(message, bearer))
                        .await?;
                    let results = &answered.get_ref().results;
                    let answers = results.iter().filter(|result| {
                        matches!(
                            result.outcome,
                            Some(pb::permission_check_result::Outcome::Result(_))
                        )
                    });
                    if answers.count() != questions.len() {
                        return Err(tonic::Status::internal("expected an answer to every check"));
                    }
                }
            }
            Call::Cerbos(team, user, permission) => {
                let roles = fixture
                    .cerbos_roles
                    .as_ref()
                    .expect("Cerbos workloads run with members' roles")
                    .of(team, user);
                let subject = &fixture.data.users[user].subject;
                let effect =
                    cerbos::check(&mut self.cerbos, subject, roles, slug(team), permission).await?;
                if effect != cerbos::EFFECT_ALLOW && effect != cerbos::EFFECT_DENY {
                    return Err(tonic::Status::internal(format!(
                        "Cerbos answered effect {effect}"
                    )));
                }
            }
            Call::Get { team, user } => {
                let message = pb::GetOrganizationRequest {
                    name: format!("organizations/{}", slug(team)),
                };
                self.orgs
                    .get_organization(signed(message, &fixture.bearers[user]))
                    .await?;
            }
            Call::List { team, user } => {
                let message = pb::ListMembersRequest {
                    parent: format!("organizations/{}", slug(team)),
                    page_size: 50,
                    ..Default::default()
                };
                let page = self
                    .members
                    .list_members(signed(message, &fixture.bearers[user]))
                    .await?;
                if page.get_ref().members.len() != 50 {
                    return Err(tonic::Status::internal("expected a full page of 50"));
                }
            }
            Call::UpdateOrg { team, user } => {
                let message = pb::UpdateOrganizationRequest {
                    organization: Some(pb::Organization {
                        name: format!("organizations/{}", slug(team)),
                        description: format!("Updated by caller {}", self.pick.below(1000)),
                        ..Default::default()
                    }),
                    update_mask: mask("description"),
                };
                self.orgs
                    .update_organization(signed(message, &fixture.bearers[user]))
                    .await?;
            }
            Call::UpdateMember { team, member, role } => {
                let owner = fixture.data.teams[team].members[0];
                let message = pb::UpdateMemberRequest {
                    member: Some(pb::Member {
                        name: format!(
                            "organizations/{}/members/{}",
                            slug(team),
                            fixture.data.users[member].id
                        ),
                        roles: vec![role.to_owned()],
                        ..Default::default()
                    }),
                    update_mask: mask("roles"),
                };
                self.members
                    .update_member(signed(message, &fixture.bearers[owner]))
                    .await?;
            }
        }
        Ok(rpc)
    }

    /// The store calls the same read RPC makes — authentication, the policy
    /// layer's access check, then the handler's query — without gRPC; says
    /// which RPC it stood for.
    pub async fn direct(&mut self, workload: Workload) -> orgd::error::Result<Rpc> {
        let call = self.draw(workload);
        let rpc = call.rpc();
        let fixture = self.fixture.clone();
        let store = self.store.as_ref().unwrap_or(&fixture.store);
        let org_ref = |team: usize| {
            OrgRef::parse(
                "name",
                &format!("organizations/{}", fixture.data.teams[team].slug),
            )
        };
        // orgd answers NOT_FOUND to a non-member, so the direct path fails too.
        let not_found = || orgd::error::Error::NotFound("organization".into());
        match call {
            Call::Check {
                token,
                user,
                permission,
            } => {
                let token = &fixture.tokens[token];
                let (_, org, _) = store.token_session(&token.secret).await?;
                if !org_ref(token.team)?.names(org.id, &org.slug) {
                    return Err(not_found());
                }
                let question = Question {
                    org: OrgRef::Id(org.id),
                    user: UserName::Id(fixture.data.users[user].id),
                    permission: permission.into(),
                };
                store.check_permissions(&[&question]).await?;
            }
            Call::ServiceChecks(questions) => {
                // A service's token is checked without SQL: the questions are all.
                let questions = questions
                    .into_iter()
                    .map(|(team, user, permission)| {
                        Ok(Question {
                            org: org_ref(team)?,
                            user: UserName::Subject(fixture.data.users[user].subject.clone()),
                            permission: permission.into(),
                        })
                    })
                    .collect::<orgd::error::Result<Vec<_>>>()?;
                let asked: Vec<&Question> = questions.iter().collect();
                store.check_permissions(&asked).await?;
            }
            Call::Get { team, user } => {
                let Some((_, _, Some(_))) = store
                    .signed_in_access(&fixture.identity(user), &org_ref(team)?)
                    .await?
                else {
                    return Err(not_found());
                };
            }
            Call::List { team, user } => {
                let Some((_, org, Some(_))) = store
                    .signed_in_access(&fixture.identity(user), &org_ref(team)?)
                    .await?
                else {
                    return Err(not_found());
                };
                store
                    .list_members(org.id, PageRequest::parse(50, "")?)
                    .await?;
            }
            Call::UpdateOrg { .. } | Call::UpdateMember { .. } | Call::Cerbos(..) => {
                unreachable!("only orgd's read workloads run directly")
            }
        }
        Ok(rpc)
    }
}
