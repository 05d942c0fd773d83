//! The central policy table: every RPC of every orgd service mapped to what it
//! requires, read from the `(orgd.v1.policy)` option of its proto declaration,
//! with the request fields screened for card numbers (`(orgd.v1.free_text)`).

use std::collections::HashMap;
use std::sync::LazyLock;

use anyhow::{Context, bail};
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor, Value};

use super::screen::TextScreen;
use crate::domain::Permission;
use crate::pb;

/// What a caller needs to call a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Any signed-in user; with `api_tokens`, API tokens too; with `services`,
    /// backend services too.
    Authenticated { api_tokens: bool, services: bool },
    /// Backend services only; with `limited_services`, those limited to some
    /// permissions (`--service-permissions`) too.
    Service { limited_services: bool },
    /// A method on the account of the user named at `user_field` (a path of
    /// field names): that user themself, or a backend service for any user.
    Account { user_field: Vec<String> },
    /// A member of the organization named in the request.
    Org(OrgPolicy),
}

/// An organization-scoped policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgPolicy {
    /// The permission required; `None`: membership alone suffices.
    pub permission: Option<Permission>,
    /// A narrower permission that admits a caller lacking `permission` to act
    /// on their own resources only (`OrgAccess::reach`).
    pub own_permission: Option<Permission>,
    /// Path of field names to the request field naming the organization.
    pub org_field: Vec<String>,
    /// Whether that field names a resource inside the organization
    /// (`organizations/{org}/members/{id}`) rather than the organization itself.
    pub child_resource: bool,
    /// Whether the method also applies to a soft-deleted organization.
    pub allow_deleted: bool,
    /// Whether backend services may call it too, for any organization (or,
    /// with the field empty, all): the handler reads which.
    pub services: bool,
}

/// The `(orgd.v1.policy)` option as written in the proto.
#[derive(Debug, Default)]
struct Declared {
    permission: String,
    member: bool,
    authenticated: bool,
    service: bool,
    org_field: String,
    allow_deleted: bool,
    child_resource: bool,
    api_tokens: bool,
    own_permission: String,
    user_field: String,
    services: bool,
    limited_services: bool,
}

/// A method as the table knows it.
#[derive(Debug, Clone)]
pub struct MethodEntry {
    /// `None` when the proto declares no policy: such a method is refused.
    pub policy: Option<Policy>,
    pub input: MessageDescriptor,
}

#[derive(Debug, Clone)]
pub struct PolicyTable {
    methods: HashMap<String, MethodEntry>,
    screen: TextScreen,
}

impl PolicyTable {
    /// Builds the table from an encoded file descriptor set, for the services in
    /// `package`. A malformed policy is a start-up error.
    pub fn from_descriptor_set(encoded: &[u8], package: &str) -> anyhow::Result<Self> {
        let pool = DescriptorPool::decode(encoded).context("decoding the file descriptor set")?;
        let extension = pool
            .get_extension_by_name("orgd.v1.policy")
            .context("the descriptor set lacks the orgd.v1.policy extension")?;
        let mut methods = HashMap::new();
        for service in pool.services().filter(|s| s.package_name() == package) {
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                let options = method.options();
                let policy = if options.has_extension(&extension) {
                    let value = options.get_extension(&extension);
                    let declared = value
                        .as_message()
                        .context("policy option is not a message")?;
                    let text = |name: &str| {
                        declared
                            .get_field_by_name(name)
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    };
                    let flag = |name: &str| {
                        declared
                            .get_field_by_name(name)
                            .and_then(|v| v.as_bool())
                            .unwrap_or(false)
                    };
                    let declared = Declared {
                        permission: text("permission"),
                        member: flag("member"),
                        authenticated: flag("authenticated"),
                        service: flag("service"),
                        org_field: text("org_field"),
                        allow_deleted: flag("allow_deleted"),
                        child_resource: flag("child_resource"),
                        api_tokens: flag("api_tokens"),
                        own_permission: text("own_permission"),
                        user_field: text("user_field"),
                        services: flag("services"),
                        limited_services: flag("limited_services"),
                    };
                    Some(
                        parse_policy(&method.input(), declared)
                            .with_context(|| format!("policy of {path}"))?,
                    )
                } else {
                    None
                };
                methods.insert(
                    path,
                    MethodEntry {
                        policy,
                        input: method.input(),
                    },
                );
            }
        }
        Ok(PolicyTable {
            methods,
            screen: TextScreen::from_pool(&pool)?,
        })
    }

    pub fn get(&self, path: &str) -> Option<&MethodEntry> {
        self.methods.get(path)
    }

    /// What every request's text is screened for.
    pub(super) fn screen(&self) -> &TextScreen {
        &self.screen
    }

    /// orgd's own table, built once from its compiled protos (the unit tests
    /// below check that it builds), for code that needs to know what a method
    /// declares outside a call to it.
    pub fn orgd() -> &'static PolicyTable {
        static TABLE: LazyLock<PolicyTable> = LazyLock::new(|| {
            PolicyTable::from_descriptor_set(pb::FILE_DESCRIPTOR_SET, pb::PACKAGE)
                .expect("orgd's protos declare valid policies")
        });
        &TABLE
    }

    /// The permission the method at `path` (`/package.Service/Method`) requires,
    /// if it is an organization method that requires one.
    pub fn permission_of(&self, path: &str) -> Option<&Permission> {
        match &self.get(path)?.policy {
            Some(Policy::Org(scope)) => scope.permission.as_ref(),
            _ => None,
        }
    }

    /// Every method path with its entry.
    pub fn methods(&self) -> impl Iterator<Item = (&str, &MethodEntry)> {
        self.methods
            .iter()
            .map(|(path, entry)| (path.as_str(), entry))
    }
}

fn parse_policy(input: &MessageDescriptor, declared: Declared) -> anyhow::Result<Policy> {
    let Declared {
        permission,
        member,
        authenticated,
        service,
        org_field,
        allow_deleted,
        child_resource,
        api_tokens,
        own_permission,
        user_field,
        services,
        limited_services,
    } = declared;
    if limited_services && !service {
        bail!("limited_services applies to service policies only");
    }
    let org_scoped = !permission.is_empty() || member;
    if api_tokens && !authenticated {
        bail!(
            "api_tokens applies to authenticated policies only (organization policies always admit tokens)"
        );
    }
    if services && !authenticated && permission.is_empty() {
        bail!("services applies to authenticated and permission policies only");
    }
    if !org_scoped && (!org_field.is_empty() || allow_deleted || child_resource) {
        bail!(
            "org_field, allow_deleted and child_resource apply to permission and member policies only"
        );
    }
    if !own_permission.is_empty() && (permission.is_empty() || own_permission == permission) {
        bail!("own_permission narrows a permission policy and differs from its permission");
    }
    let account = !user_field.is_empty();
    match (
        !permission.is_empty(),
        member,
        authenticated,
        service,
        account,
    ) {
        (true, false, false, false, false) | (false, true, false, false, false) => {
            if org_field.is_empty() {
                bail!(
                    "an organization-scoped policy needs org_field naming the request field with the organization"
                );
            }
            let path: Vec<String> = org_field.split('.').map(str::to_owned).collect();
            check_string_field(input, &path)?;
            Ok(Policy::Org(OrgPolicy {
                permission: (!permission.is_empty()).then(|| permission.into()),
                own_permission: (!own_permission.is_empty()).then(|| own_permission.into()),
                org_field: path,
                child_resource,
                allow_deleted,
                services,
            }))
        }
        (false, false, true, false, false) => Ok(Policy::Authenticated {
            api_tokens,
            services,
        }),
        (false, false, false, true, false) => Ok(Policy::Service { limited_services }),
        (false, false, false, false, true) => {
            let path: Vec<String> = user_field.split('.').map(str::to_owned).collect();
            check_string_field(input, &path)?;
            Ok(Policy::Account { user_field: path })
        }
        _ => bail!("set exactly one of permission, member, authenticated, service and user_field"),
    }
}

/// `path` must lead through singular message fields to a string field.
fn check_string_field(input: &MessageDescriptor, path: &[String]) -> anyhow::Result<()> {
    let mut message = input.clone();
    for (i, name) in path.iter().enumerate() {
        let field = message
            .get_field_by_name(name)
            .with_context(|| format!("{} has no field '{name}'", message.full_name()))?;
        if field.is_list() || field.is_map() {
            bail!("'{name}' is repeated; the field must hold one name");
        }
        match field.kind() {
            Kind::String if i == path.len() - 1 => return Ok(()),
            Kind::Message(inner) if i < path.len() - 1 => message = inner,
            _ => bail!("'{}' must name a string field", path.join(".")),
        }
    }
    bail!("the field path is empty")
}

/// Reads the string at `path` in a decoded request; missing means empty.
pub fn read_string_field(message: &prost_reflect::DynamicMessage, path: &[String]) -> String {
    let mut current = message.clone();
    for (i, name) in path.iter().enumerate() {
        let Some(value) = current.get_field_by_name(name) else {
            return String::new();
        };
        match value.into_owned() {
            Value::String(s) if i == path.len() - 1 => return s,
            Value::Message(inner) => current = inner,
            _ => return String::new(),
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_orgd_method_declares_a_policy() {
        let table = PolicyTable::from_descriptor_set(pb::FILE_DESCRIPTOR_SET, pb::PACKAGE).unwrap();
        assert!(table.methods().count() >= 10);
        for (path, entry) in table.methods() {
            assert!(
                entry.policy.is_some(),
                "{path} has no (orgd.v1.policy) option"
            );
        }
        assert_eq!(
            table
                .get("/orgd.v1.OrgService/UpdateOrganization")
                .unwrap()
                .policy,
            Some(Policy::Org(OrgPolicy {
                permission: Some("org.update".into()),
                own_permission: None,
                org_field: vec!["organization".into(), "name".into()],
                child_resource: false,
                allow_deleted: false,
                services: false,
            }))
        );
    }

    #[test]
    fn a_method_s_permission_is_found_by_its_path() {
        let table = PolicyTable::orgd();
        assert_eq!(
            table.permission_of("/orgd.v1.MemberService/CreateInvitation"),
            Some(&Permission::from("members.manage"))
        );
        // Members' methods, user methods and unknown paths demand none.
        for path in [
            "/orgd.v1.MemberService/LeaveOrganization",
            "/orgd.v1.MemberService/AcceptInvitation",
            "/orgd.v1.MemberService/Nope",
        ] {
            assert_eq!(table.permission_of(path), None, "{path}");
        }
    }

    #[test]
    fn delete_user_acts_on_the_account_its_name_names() {
        assert_eq!(
            PolicyTable::orgd()
                .get("/orgd.v1.OrgService/DeleteUser")
                .unwrap()
                .policy,
            Some(Policy::Account {
                user_field: vec!["name".into()]
            })
        );
    }

    #[test]
    fn token_methods_admit_their_own_tokens_with_a_narrower_permission() {
        let table = PolicyTable::orgd();
        for method in ["CreateApiToken", "ListApiTokens", "RevokeApiToken"] {
            let path = format!("/orgd.v1.TokenService/{method}");
            let Some(Policy::Org(scope)) = &table.get(&path).unwrap().policy else {
                panic!("{path} is an organization method");
            };
            assert!(scope.permission.is_some(), "{path}");
            assert!(scope.own_permission.is_some(), "{path}");
            assert_ne!(scope.permission, scope.own_permission, "{path}");
        }
    }

    #[test]
    fn malformed_policies_are_rejected() {
        let table = PolicyTable::from_descriptor_set(pb::FILE_DESCRIPTOR_SET, pb::PACKAGE).unwrap();
        let input = table
            .get("/orgd.v1.OrgService/GetOrganization")
            .unwrap()
            .input
            .clone();
        // (permission, member, authenticated, service, org_field)
        let parse = |permission: &str, member, authenticated, service, org_field: &str| {
            parse_policy(
                &input,
                Declared {
                    permission: permission.into(),
                    member,
                    authenticated,
                    service,
                    org_field: org_field.into(),
                    ..Default::default()
                },
            )
        };
        assert!(parse("org.read", false, false, false, "").is_err());
        assert!(parse("org.read", false, false, false, "nope").is_err());
        assert!(parse("org.read", false, true, false, "name").is_err());
        assert!(parse("org.read", true, false, false, "name").is_err());
        assert!(parse("", true, false, false, "").is_err());
        assert!(parse("", false, false, false, "").is_err());
        assert!(parse("", false, true, false, "name").is_err());
        assert!(parse("org.read", false, false, false, "name").is_ok());
        let narrowed = |permission: &str, own: &str, member| {
            parse_policy(
                &input,
                Declared {
                    permission: permission.into(),
                    own_permission: own.into(),
                    member,
                    org_field: "name".into(),
                    ..Default::default()
                },
            )
        };
        let with_services = |authenticated| {
            parse_policy(
                &input,
                Declared {
                    authenticated,
                    services: true,
                    ..Default::default()
                },
            )
        };
        assert!(with_services(false).is_err());
        assert_eq!(
            with_services(true).unwrap(),
            Policy::Authenticated {
                api_tokens: false,
                services: true
            }
        );
        assert!(narrowed("org.update", "org.read", false).is_ok());
        assert!(narrowed("org.read", "org.read", false).is_err());
        assert!(narrowed("", "org.read", true).is_err());
        let account = |user_field: &str, service| {
            parse_policy(
                &input,
                Declared {
                    user_field: user_field.into(),
                    service,
                    ..Default::default()
                },
            )
        };
        assert_eq!(
            account("name", false).unwrap(),
            Policy::Account {
                user_field: vec!["name".into()]
            }
        );
        assert!(account("nope", false).is_err());
        assert!(account("name", true).is_err());
        assert_eq!(
            parse("", true, false, false, "name").unwrap(),
            Policy::Org(OrgPolicy {
                permission: None,
                own_permission: None,
                org_field: vec!["name".into()],
                child_resource: false,
                allow_deleted: false,
                services: false,
            })
        );
    }
}
