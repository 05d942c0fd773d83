//! Backend services: token subjects configured as platform-level callers
//! (`--service-subjects`), and the permissions each may ask about
//! (`--service-permissions`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::bail;

use crate::config::ServicePermissions;
use crate::error::{Error, Result};

/// The permissions a service may check and look up.
#[derive(Debug, PartialEq, Eq)]
pub enum Checkable {
    /// Every permission: the default.
    Every,
    /// These only.
    Only(BTreeSet<String>),
}

/// A backend service calling.
#[derive(Debug, Clone)]
pub struct ServiceCaller {
    pub subject: String,
    pub checkable: Arc<Checkable>,
}

impl ServiceCaller {
    /// `services/{subject}`.
    pub fn name(&self) -> String {
        format!("services/{}", self.subject)
    }

    /// Refuses a question about `permission` (from the request's `field`)
    /// that the service is not configured to ask.
    pub fn ensure_may_check(&self, field: &str, permission: &str) -> Result<()> {
        match &*self.checkable {
            Checkable::Only(permissions) if !permissions.contains(permission) => {
                Err(Error::PermissionDenied(format!(
                    "{field}: {} may ask about {} only (--service-permissions), not {}",
                    self.name(),
                    listed(permissions),
                    crate::domain::quoted(permission)
                )))
            }
            _ => Ok(()),
        }
    }

    /// Refuses a method that shows every role and permission (`what`) to a
    /// service limited to some permissions.
    pub fn ensure_sees_everything(&self, what: &str) -> Result<()> {
        match &*self.checkable {
            Checkable::Only(permissions) => Err(Error::PermissionDenied(format!(
                "{what} shows every role and permission, and {} may ask about {} only (--service-permissions); \
                 ask LookupOrganizations with one of those permissions instead",
                self.name(),
                listed(permissions)
            ))),
            Checkable::Every => Ok(()),
        }
    }

    /// Refuses a service method (`path`) not open to services limited to some
    /// permissions: such a service is there to ask about those.
    pub fn ensure_unlimited(&self, path: &str) -> Result<()> {
        match &*self.checkable {
            Checkable::Only(permissions) => Err(Error::PermissionDenied(format!(
                "{path} is for services that may ask about every permission, and {} may ask \
                 about {} only (--service-permissions); it asks PermissionService \
                 (CheckPermission, LookupOrganizations, …) about those",
                self.name(),
                listed(permissions)
            ))),
            Checkable::Every => Ok(()),
        }
    }

    /// Refuses a method on any user's account (`path`) to a service limited to
    /// some permissions: such a service is there to ask about those.
    pub fn ensure_may_act_on_accounts(&self, path: &str) -> Result<()> {
        match &*self.checkable {
            Checkable::Only(permissions) => Err(Error::PermissionDenied(format!(
                "{path} acts on any user's account, and {} may only ask about {} (--service-permissions)",
                self.name(),
                listed(permissions)
            ))),
            Checkable::Every => Ok(()),
        }
    }
}

fn listed(permissions: &BTreeSet<String>) -> String {
    permissions
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The configured services by subject.
#[derive(Debug, Clone, Default)]
pub struct ServiceDirectory {
    services: HashMap<String, Arc<Checkable>>,
}

impl ServiceDirectory {
    /// The services `subjects`, limited as `limits` say; a limit must name a
    /// service, once.
    pub fn new(subjects: &[String], limits: &[ServicePermissions]) -> anyhow::Result<Self> {
        let mut only: HashMap<&str, BTreeSet<String>> = HashMap::new();
        for limit in limits {
            if !subjects.contains(&limit.subject) {
                bail!(
                    "--service-permissions names '{}', which is not among --service-subjects",
                    limit.subject
                );
            }
            let permissions = limit.permissions.iter().cloned().collect();
            if only.insert(&limit.subject, permissions).is_some() {
                bail!(
                    "--service-permissions names '{}' twice; list all its permissions in one entry",
                    limit.subject
                );
            }
        }
        let services = subjects
            .iter()
            .map(|subject| {
                let checkable = only
                    .remove(subject.as_str())
                    .map_or(Checkable::Every, Checkable::Only);
                (subject.clone(), Arc::new(checkable))
            })
            .collect();
        Ok(ServiceDirectory { services })
    }

    /// The service whose token has subject `subject`, if it is one.
    pub fn caller(&self, subject: &str) -> Option<ServiceCaller> {
        self.services
            .get_key_value(subject)
            .map(|(subject, checkable)| ServiceCaller {
                subject: subject.clone(),
                checkable: checkable.clone(),
            })
    }

    /// Every permission a limit names, for the start-up check that orgd
    /// defines them.
    pub fn limited_permissions(&self) -> BTreeSet<&str> {
        self.services
            .values()
            .filter_map(|checkable| match &**checkable {
                Checkable::Only(permissions) => Some(permissions),
                Checkable::Every => None,
            })
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(subject: &str, permissions: &[&str]) -> ServicePermissions {
        ServicePermissions {
            subject: subject.into(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn services_ask_about_what_they_are_configured_for() {
        let subjects = ["deploy".to_owned(), "billing".to_owned()];
        let directory =
            ServiceDirectory::new(&subjects, &[limit("deploy", &["projects.create"])]).unwrap();
        assert!(directory.caller("alice").is_none());
        let deploy = directory.caller("deploy").unwrap();
        assert!(
            deploy
                .ensure_may_check("permission", "projects.create")
                .is_ok()
        );
        let refused = deploy.ensure_may_check("checks[3].permission", "billing.manage");
        assert!(
            matches!(&refused, Err(Error::PermissionDenied(message))
                if message.starts_with("checks[3].permission: services/deploy may ask about projects.create only")),
            "{refused:?}"
        );
        assert!(
            deploy
                .ensure_sees_everything("ListUserOrganizations")
                .is_err()
        );
        let billing = directory.caller("billing").unwrap();
        assert!(
            billing
                .ensure_may_check("permission", "billing.manage")
                .is_ok()
        );
        assert!(
            billing
                .ensure_sees_everything("ListUserOrganizations")
                .is_ok()
        );
        assert_eq!(
            directory.limited_permissions(),
            BTreeSet::from(["projects.create"])
        );
    }

    #[test]
    fn limits_name_configured_services_once() {
        let subjects = ["deploy".to_owned()];
        assert!(ServiceDirectory::new(&subjects, &[limit("mailer", &["org.read"])]).is_err());
        let twice = [
            limit("deploy", &["org.read"]),
            limit("deploy", &["org.update"]),
        ];
        assert!(ServiceDirectory::new(&subjects, &twice).is_err());
    }
}
