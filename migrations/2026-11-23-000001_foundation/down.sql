DROP TABLE activity, outbox_messages, contact_email_verifications, org_resources,
    membership_permissions, membership_roles, memberships, role_permissions, roles,
    permissions, organizations, users;
DROP FUNCTION memberships_personal_single_member();
