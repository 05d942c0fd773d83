//! Diesel table definitions matching `migrations/`.

diesel::table! {
    users (id) {
        id -> Uuid,
        subject -> Nullable<Text>,
        email -> Text,
        email_verified -> Bool,
        display_name -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        organization_limit -> Nullable<Int4>,
    }
}

diesel::table! {
    organizations (id) {
        id -> Uuid,
        slug -> Text,
        display_name -> Text,
        description -> Text,
        contact_email -> Text,
        pending_contact_email -> Nullable<Text>,
        personal_owner_id -> Nullable<Uuid>,
        revision -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        purge_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    permissions (name) {
        name -> Text,
        description -> Text,
    }
}

diesel::table! {
    roles (name) {
        name -> Text,
        description -> Text,
    }
}

diesel::table! {
    role_permissions (role, permission) {
        role -> Text,
        permission -> Text,
    }
}

diesel::table! {
    permission_implications (permission, implies) {
        permission -> Text,
        implies -> Text,
    }
}

diesel::table! {
    memberships (org_id, user_id) {
        org_id -> Uuid,
        user_id -> Uuid,
        created_at -> Timestamptz,
        invited_by -> Nullable<Uuid>,
        revision -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    membership_roles (org_id, user_id, role) {
        org_id -> Uuid,
        user_id -> Uuid,
        role -> Text,
    }
}

diesel::table! {
    membership_permissions (org_id, user_id, permission) {
        org_id -> Uuid,
        user_id -> Uuid,
        permission -> Text,
    }
}

diesel::table! {
    org_resources (id) {
        id -> Uuid,
        org_id -> Uuid,
        kind -> Text,
        external_id -> Text,
        display_name -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    contact_email_verifications (token_hash) {
        token_hash -> Bytea,
        org_id -> Uuid,
        email -> Text,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
        requested_by -> Uuid,
        permission -> Text,
    }
}

diesel::table! {
    outbox_messages (id) {
        id -> Uuid,
        recipient -> Text,
        subject -> Text,
        body -> Text,
        created_at -> Timestamptz,
        delivered_at -> Nullable<Timestamptz>,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_error -> Nullable<Text>,
        failed_at -> Nullable<Timestamptz>,
        lease_id -> Nullable<Uuid>,
        leased_until -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    activity (id) {
        id -> Uuid,
        org_id -> Nullable<Uuid>,
        actor_user_id -> Nullable<Uuid>,
        actor -> Text,
        action -> Text,
        target -> Text,
        request_id -> Text,
        details -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    create_requests (user_id, request_id) {
        user_id -> Uuid,
        request_id -> Uuid,
        org_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    invitations (id) {
        id -> Uuid,
        org_id -> Uuid,
        email -> Text,
        roles -> Array<Text>,
        extra_permissions -> Array<Text>,
        token_hash -> Bytea,
        state -> Text,
        inviter_id -> Nullable<Uuid>,
        accepted_by -> Nullable<Uuid>,
        send_count -> Int4,
        created_at -> Timestamptz,
        sent_at -> Timestamptz,
        expires_at -> Timestamptz,
        closed_at -> Nullable<Timestamptz>,
        expiry_recorded_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    plans (id) {
        id -> Text,
        display_name -> Text,
        price_minor -> Int8,
        currency -> Text,
        max_members -> Nullable<Int4>,
        max_resources -> Nullable<Int4>,
        tier -> Int4,
    }
}

diesel::table! {
    subscriptions (org_id) {
        org_id -> Uuid,
        plan_id -> Text,
        status -> Text,
        period_start -> Timestamptz,
        period_end -> Timestamptz,
        cancel_at_period_end -> Bool,
        revision -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    subscription_segments (org_id, starts_at) {
        org_id -> Uuid,
        starts_at -> Timestamptz,
        plan_id -> Text,
    }
}

diesel::table! {
    billing_profiles (org_id) {
        org_id -> Uuid,
        legal_name -> Text,
        billing_email -> Text,
        pending_billing_email -> Nullable<Text>,
        tax_id -> Text,
        address_lines -> Array<Text>,
        city -> Text,
        postal_code -> Text,
        region -> Text,
        country -> Text,
        revision -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    billing_email_verifications (token_hash) {
        token_hash -> Bytea,
        org_id -> Uuid,
        email -> Text,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
        requested_by -> Uuid,
        permission -> Text,
    }
}

diesel::table! {
    payment_methods (id) {
        id -> Uuid,
        org_id -> Uuid,
        processor_token -> Text,
        brand -> Text,
        last4 -> Text,
        exp_month -> Int4,
        exp_year -> Int4,
        is_default -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    vouchers (code) {
        code -> Text,
        amount_minor -> Int8,
        currency -> Text,
        expires_at -> Nullable<Timestamptz>,
        max_redemptions -> Int4,
        redemptions -> Int4,
        created_by -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    voucher_redemptions (code, org_id) {
        code -> Text,
        org_id -> Uuid,
        redeemed_at -> Timestamptz,
    }
}

diesel::table! {
    credit_entries (id) {
        id -> Uuid,
        org_id -> Uuid,
        amount_minor -> Int8,
        currency -> Text,
        source -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    invoices (id) {
        id -> Uuid,
        org_id -> Uuid,
        number -> Text,
        org_name -> Text,
        period_start -> Timestamptz,
        period_end -> Timestamptz,
        currency -> Text,
        subtotal_minor -> Int8,
        credit_minor -> Int8,
        total_minor -> Int8,
        bill_to -> Jsonb,
        created_at -> Timestamptz,
        state -> Text,
        due_at -> Timestamptz,
        paid_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    invoice_payments (processor_reference) {
        processor_reference -> Text,
        invoice_id -> Uuid,
        outcome -> Text,
        failure_message -> Nullable<Text>,
        recorded_by -> Text,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    invoice_lines (invoice_id, position) {
        invoice_id -> Uuid,
        position -> Int4,
        description -> Text,
        amount_minor -> Int8,
    }
}

diesel::table! {
    usage_charges (id) {
        id -> Uuid,
        org_id -> Uuid,
        description -> Text,
        amount_minor -> Int8,
        currency -> Text,
        resource_id -> Nullable<Uuid>,
        usage_start -> Timestamptz,
        usage_end -> Timestamptz,
        reported_by -> Text,
        request_id -> Uuid,
        created_at -> Timestamptz,
        invoice_id -> Nullable<Uuid>,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Uuid,
        org_id -> Uuid,
        creator_id -> Uuid,
        display_name -> Text,
        prefix -> Text,
        secret_hash -> Bytea,
        roles -> Array<Text>,
        extra_permissions -> Array<Text>,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        expiry_recorded_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(subscriptions -> plans (plan_id));
diesel::joinable!(invoice_lines -> invoices (invoice_id));
diesel::joinable!(invoice_payments -> invoices (invoice_id));

diesel::joinable!(invitations -> organizations (org_id));
diesel::joinable!(memberships -> organizations (org_id));
diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(org_resources -> organizations (org_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    organizations,
    permissions,
    roles,
    role_permissions,
    permission_implications,
    memberships,
    membership_roles,
    membership_permissions,
    org_resources,
    contact_email_verifications,
    outbox_messages,
    activity,
    create_requests,
    invitations,
    plans,
    subscriptions,
    subscription_segments,
    billing_profiles,
    billing_email_verifications,
    payment_methods,
    vouchers,
    voucher_redemptions,
    credit_entries,
    invoices,
    invoice_lines,
    invoice_payments,
    usage_charges,
    api_tokens,
);
