-- The plans catalogue. Prices are integer minor units of an ISO-4217 currency;
-- NULL limits mean unlimited.
CREATE TABLE plans (
    id            text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]*$'),
    display_name  text NOT NULL,
    price_minor   bigint NOT NULL CHECK (price_minor >= 0),
    currency      text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    max_members   integer CHECK (max_members > 0),
    max_resources integer CHECK (max_resources >= 0),
    -- Orders plans from smallest to largest.
    tier          integer NOT NULL UNIQUE
);
INSERT INTO plans (id, display_name, price_minor, currency, max_members, max_resources, tier) VALUES
    ('hobby',   'Hobby',      0, 'USD', 1,    3,    0),
    ('starter', 'Starter', 1900, 'USD', 3,    20,   1),
    ('startup', 'Startup', 4900, 'USD', 6,    100,  2),
    ('team',    'Team',    9900, 'USD', NULL, NULL, 3);

-- Every organization has one subscription, billed in monthly periods. An ended
-- subscription (its organization was deleted) bills nothing until restored.
CREATE TABLE subscriptions (
    org_id                uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    plan_id               text NOT NULL REFERENCES plans (id),
    status                text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    period_start          timestamptz NOT NULL,
    period_end            timestamptz NOT NULL,
    cancel_at_period_end  boolean NOT NULL DEFAULT false,
    revision              bigint NOT NULL DEFAULT 1,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK (period_end > period_start)
);
CREATE INDEX subscriptions_due ON subscriptions (period_end) WHERE status <> 'ended';

-- The plans an organization had during its current period, for proration: each
-- segment lasts until the next one starts or the period closes.
CREATE TABLE subscription_segments (
    org_id     uuid NOT NULL REFERENCES subscriptions (org_id) ON DELETE CASCADE,
    starts_at  timestamptz NOT NULL,
    plan_id    text NOT NULL REFERENCES plans (id),
    PRIMARY KEY (org_id, starts_at)
);

-- Existing organizations: personal ones on Hobby, team ones on the smallest paid
-- plan their members fit; soft-deleted ones are not billed until restored.
INSERT INTO subscriptions (org_id, plan_id, status, period_start, period_end)
SELECT o.id,
       CASE WHEN o.personal_owner_id IS NOT NULL THEN 'hobby'
            ELSE (SELECT p.id FROM plans p
                  WHERE p.price_minor > 0
                    AND (p.max_members IS NULL OR p.max_members >=
                         (SELECT count(*) FROM memberships m WHERE m.org_id = o.id))
                  ORDER BY p.tier LIMIT 1)
       END,
       CASE WHEN o.deleted_at IS NULL THEN 'active' ELSE 'ended' END,
       now(), now() + interval '1 month'
FROM organizations o;
INSERT INTO subscription_segments (org_id, starts_at, plan_id)
SELECT org_id, period_start, plan_id FROM subscriptions WHERE status = 'active';

CREATE TABLE billing_profiles (
    org_id                 uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    legal_name             text NOT NULL DEFAULT '',
    billing_email          text NOT NULL DEFAULT '',
    pending_billing_email  text,
    tax_id                 text NOT NULL DEFAULT '',
    address_lines          text[] NOT NULL DEFAULT '{}',
    city                   text NOT NULL DEFAULT '',
    postal_code            text NOT NULL DEFAULT '',
    region                 text NOT NULL DEFAULT '',
    country                text NOT NULL DEFAULT '' CHECK (country ~ '^([A-Z]{2})?$'),
    revision               bigint NOT NULL DEFAULT 1,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

INSERT INTO billing_profiles (org_id) SELECT id FROM organizations;

-- Pending billing-email changes; only the token's hash is stored.
CREATE TABLE billing_email_verifications (
    token_hash  bytea PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email       text NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_email_verifications_org ON billing_email_verifications (org_id);

-- Payment methods are the processor's token plus what a person needs to recognise
-- the card; a card number is never stored.
CREATE TABLE payment_methods (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    processor_token  text NOT NULL CHECK (processor_token ~ '^pm_[A-Za-z0-9_]{3,100}$'),
    brand            text NOT NULL CHECK (length(brand) BETWEEN 1 AND 30),
    last4            text NOT NULL CHECK (last4 ~ '^[0-9]{4}$'),
    exp_month        integer NOT NULL CHECK (exp_month BETWEEN 1 AND 12),
    exp_year         integer NOT NULL CHECK (exp_year BETWEEN 2000 AND 2200),
    is_default       boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, processor_token)
);
CREATE UNIQUE INDEX payment_methods_one_default ON payment_methods (org_id) WHERE is_default;

-- Vouchers are created by operators; each organization redeems a code once.
CREATE TABLE vouchers (
    code             text PRIMARY KEY CHECK (code ~ '^[A-Z0-9][A-Z0-9-]{3,39}$'),
    -- Capped, so that no sum of credits can overflow.
    amount_minor     bigint NOT NULL CHECK (amount_minor BETWEEN 1 AND 1000000000000),
    currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    expires_at       timestamptz,
    max_redemptions  integer NOT NULL CHECK (max_redemptions > 0),
    redemptions      integer NOT NULL DEFAULT 0,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (redemptions BETWEEN 0 AND max_redemptions)
);
CREATE TABLE voucher_redemptions (
    code         text NOT NULL REFERENCES vouchers (code),
    org_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    redeemed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (code, org_id)
);

-- Credit ledger: vouchers add (positive), invoices consume (negative).
CREATE TABLE credit_entries (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    amount_minor  bigint NOT NULL CHECK (amount_minor <> 0),
    currency      text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    source        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_entries_org ON credit_entries (org_id, currency);

-- Invoices are financial records: no foreign key, so they outlive a purged
-- organization; the bill-to address is a snapshot. One per organization and period.
CREATE SEQUENCE invoice_numbers;
CREATE TABLE invoices (
    id              uuid PRIMARY KEY,
    org_id          uuid NOT NULL,
    number          text NOT NULL UNIQUE,
    org_name        text NOT NULL,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    subtotal_minor  bigint NOT NULL CHECK (subtotal_minor >= 0),
    credit_minor    bigint NOT NULL CHECK (credit_minor >= 0),
    total_minor     bigint NOT NULL,
    bill_to         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, period_start),
    CHECK (credit_minor <= subtotal_minor AND total_minor = subtotal_minor - credit_minor),
    CHECK (period_end > period_start)
);
CREATE INDEX invoices_org ON invoices (org_id, period_start DESC, id);
CREATE TABLE invoice_lines (
    invoice_id    uuid NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    position      integer NOT NULL,
    description   text NOT NULL,
    amount_minor  bigint NOT NULL,
    PRIMARY KEY (invoice_id, position)
);
