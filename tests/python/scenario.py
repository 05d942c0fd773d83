#!/usr/bin/env python3
"""A Python client of orgd, generated from proto/ at start, driving a team scenario.

It is what a client team in another language does: generate stubs from the
contract with grpcio-tools, call orgd over real gRPC, and read the google.rpc
error details that orgd attaches to its errors. tests/python_client.rs runs it
against a test orgd; it can also run against `cargo run -- serve`:

    python3 -m venv target/python-client
    target/python-client/bin/pip install -r tests/python/requirements.txt
    ALICE=$(cargo run -q -- token --sub alice --email alice@example.com)
    BOB=$(cargo run -q -- token --sub bob --email bob@example.com)
    target/python-client/bin/python tests/python/scenario.py \
        --addr 127.0.0.1:50051 --alice-token "$ALICE" --bob-token "$BOB"

Both users' tokens must carry a verified `{sub}@example.com` email. The only
thing it cannot reach over gRPC is the invitation email: it asks for the token on
stdout with one line, `need-invitation-token <email>`, and reads it back from
stdin (answer by hand when running it yourself; the token is in orgd's log).
Its progress goes to stderr; its last stdout line is `scenario-complete`, and it
exits 0 only when every assertion held.
"""

import argparse
import glob
import importlib
import os
import sys
import tempfile

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RPC_TIMEOUT = 30  # seconds, for each call

MEMBER_EMAIL = "bob@example.com"
ORG_DISPLAY_NAME = "Acme Python"
CREATE_REQUEST_ID = "py-scenario-create-org"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addr", default=os.environ.get("ORGD_ADDR", "127.0.0.1:50051"))
    parser.add_argument("--alice-token", default=os.environ.get("ORGD_ALICE_TOKEN"))
    parser.add_argument("--bob-token", default=os.environ.get("ORGD_BOB_TOKEN"))
    parser.add_argument("--proto-dir", default=os.path.join(REPO, "proto"))
    args = parser.parse_args()
    if not args.alice_token or not args.bob_token:
        parser.error("pass --alice-token and --bob-token (or ORGD_ALICE_TOKEN and ORGD_BOB_TOKEN)")
    return args


def step(text):
    print(f"scenario: {text}", file=sys.stderr, flush=True)


# --- Stubs ------------------------------------------------------------------


def generate_stubs(proto_dir, out_dir):
    """Runs grpcio-tools' protoc over proto/orgd/v1 into out_dir."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = sorted(
        os.path.relpath(path, proto_dir)
        for path in glob.glob(os.path.join(proto_dir, "orgd", "v1", "*.proto"))
    )
    assert files, f"no .proto files under {proto_dir}/orgd/v1"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={proto_dir}",
            f"--proto_path={well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *files,
        ]
    )
    assert status == 0, f"protoc failed ({status}) on {files}"
    return [os.path.splitext(os.path.basename(f))[0] for f in files]


class Api:
    """The generated modules: `api.org` is org_pb2, `api.org_grpc` org_pb2_grpc, …"""

    def __init__(self, names):
        for name in names:
            setattr(self, name, importlib.import_module(f"orgd.v1.{name}_pb2"))
            setattr(self, f"{name}_grpc", importlib.import_module(f"orgd.v1.{name}_pb2_grpc"))


class Caller:
    """One caller (a user's JWT or an API token) with a stub per service."""

    def __init__(self, api, channel, token):
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.orgs = api.org_grpc.OrgServiceStub(channel)
        self.members = api.member_grpc.MemberServiceStub(channel)
        self.billing = api.billing_grpc.BillingServiceStub(channel)
        self.tokens = api.token_grpc.TokenServiceStub(channel)
        self.activity = api.activity_grpc.ActivityServiceStub(channel)

    def __call__(self, method, request, extra_metadata=()):
        return method(request, metadata=self.metadata + tuple(extra_metadata), timeout=RPC_TIMEOUT)

    def with_call(self, method, request, extra_metadata=()):
        """The response and the call, for its response metadata."""
        return method.with_call(
            request, metadata=self.metadata + tuple(extra_metadata), timeout=RPC_TIMEOUT
        )


# --- Errors -----------------------------------------------------------------


# ErrorInfo reasons of the status codes whose reason does not vary; a failed
# precondition's reason is its PreconditionFailure violation type.
GENERIC_REASONS = {
    grpc.StatusCode.INVALID_ARGUMENT: "INVALID_FIELD",
    grpc.StatusCode.NOT_FOUND: "NOT_FOUND",
    grpc.StatusCode.ALREADY_EXISTS: "ALREADY_EXISTS",
    grpc.StatusCode.PERMISSION_DENIED: "PERMISSION_DENIED",
    grpc.StatusCode.UNAUTHENTICATED: "UNAUTHENTICATED",
    grpc.StatusCode.ABORTED: "CONCURRENT_CHANGE",
}


def expect_error(what, code, call):
    """Runs call(), which must fail with `code` and a message; returns the error."""
    try:
        response = call()
    except grpc.RpcError as err:
        assert err.code() == code, (
            f"{what}: expected {code.name}, got {err.code().name}: {err.details()}"
        )
        assert err.details(), f"{what}: {code.name} came without a message"
        # Every orgd error carries a google.rpc.ErrorInfo (AIP-193).
        info = detail(what, err, error_details_pb2.ErrorInfo)
        assert info.domain == "orgd", f"{what}: ErrorInfo domain {info.domain!r}"
        expected_reason = GENERIC_REASONS.get(code)
        assert expected_reason is None or info.reason == expected_reason, (
            f"{what}: ErrorInfo reason {info.reason!r}, expected {expected_reason!r}"
        )
        return err
    raise AssertionError(f"{what}: expected {code.name}, got success: {response}")


def detail(what, err, message_type):
    """The google.rpc detail of `message_type` in err's grpc-status-details-bin."""
    status = rpc_status.from_call(err)
    assert status is not None, (
        f"{what}: {err.code().name} ({err.details()}) has no google.rpc.Status in its trailers"
    )
    assert status.code == err.code().value[0], f"{what}: rich status code {status.code}"
    assert status.message == err.details(), f"{what}: rich status message {status.message!r}"
    for packed in status.details:
        if packed.Is(message_type.DESCRIPTOR):
            found = message_type()
            packed.Unpack(found)
            return found
    raise AssertionError(
        f"{what}: no {message_type.DESCRIPTOR.full_name} among the details "
        f"{[packed.type_url for packed in status.details]}"
    )


def precondition(what, err):
    """The only violation of err's PreconditionFailure: (type, subject, description)."""
    failure = detail(what, err, error_details_pb2.PreconditionFailure)
    assert len(failure.violations) == 1, f"{what}: violations {failure.violations}"
    violation = failure.violations[0]
    info = detail(what, err, error_details_pb2.ErrorInfo)
    assert (info.reason, info.metadata.get("subject")) == (violation.type, violation.subject), (
        f"{what}: ErrorInfo {info.reason} {dict(info.metadata)} vs violation {violation}"
    )
    return violation.type, violation.subject, violation.description


def field_violation(what, err):
    """The only field violation of err's BadRequest: (field, description)."""
    bad_request = detail(what, err, error_details_pb2.BadRequest)
    assert len(bad_request.field_violations) == 1, (
        f"{what}: field violations {bad_request.field_violations}"
    )
    violation = bad_request.field_violations[0]
    info = detail(what, err, error_details_pb2.ErrorInfo)
    assert info.metadata.get("field") == violation.field, (
        f"{what}: ErrorInfo metadata {dict(info.metadata)} vs field {violation.field}"
    )
    return violation.field, violation.description


# --- The scenario -----------------------------------------------------------


def emailed_invitation_token(email):
    """Asks the test harness (our stdin/stdout) for the token emailed to `email`."""
    print(f"need-invitation-token {email}", flush=True)
    line = sys.stdin.readline()
    assert line.strip(), f"no invitation token for {email} on stdin"
    return line.strip()


def run(api, channel, alice_token, bob_token):
    nobody = Caller(api, channel, None)
    alice = Caller(api, channel, alice_token)
    bob = Caller(api, channel, bob_token)

    step("a call without credentials is UNAUTHENTICATED")
    expect_error(
        "WhoAmI without a token",
        grpc.StatusCode.UNAUTHENTICATED,
        lambda: nobody(nobody.orgs.WhoAmI, api.org.WhoAmIRequest()),
    )

    step("alice and bob sign in")
    alice_user = alice(alice.orgs.WhoAmI, api.org.WhoAmIRequest()).user
    bob_user = bob(bob.orgs.WhoAmI, api.org.WhoAmIRequest()).user
    for user, email in ((alice_user, "alice@example.com"), (bob_user, MEMBER_EMAIL)):
        assert user.name == f"users/{user.uid}", f"user name {user.name!r}, uid {user.uid!r}"
        assert user.email == email and user.email_verified, f"user {user}"

    step("alice creates a team organization")
    org, call = alice.with_call(
        alice.orgs.CreateOrganization,
        api.org.CreateOrganizationRequest(
            organization=api.org.Organization(display_name=ORG_DISPLAY_NAME)
        ),
        extra_metadata=(("x-request-id", CREATE_REQUEST_ID),),
    )
    assert org.name == f"organizations/{org.uid}", f"organization name {org.name!r}"
    assert org.slug == "acme-python", f"slug derived from the display name: {org.slug!r}"
    assert org.display_name == ORG_DISPLAY_NAME
    assert org.state == api.org.Organization.STATE_ACTIVE, f"state {org.state}"
    assert not org.personal, "a created organization is a team organization"
    assert org.contact_email == "alice@example.com", f"contact email {org.contact_email!r}"
    assert org.etag, "the organization has an etag"
    echoed = dict(call.initial_metadata()).get("x-request-id")
    assert echoed == CREATE_REQUEST_ID, f"x-request-id echoed as {echoed!r}"
    subscription_name = f"{org.name}/subscription"
    subscription = alice(
        alice.billing.GetSubscription, api.billing.GetSubscriptionRequest(name=subscription_name)
    )
    # The test server starts team organizations on Starter (--default-plan), so a team fits.
    assert subscription.plan == "plans/starter", f"this server starts team organizations on {subscription.plan}"
    assert subscription.status == api.billing.Subscription.STATUS_ACTIVE

    step("alice invites bob as a developer")
    invitation = alice(
        alice.members.CreateInvitation,
        api.member.CreateInvitationRequest(
            parent=org.name,
            invitation=api.member.Invitation(email=MEMBER_EMAIL, roles=["developer"]),
        ),
    )
    assert invitation.name.startswith(f"{org.name}/invitations/"), f"invitation {invitation.name!r}"
    assert invitation.state == api.member.Invitation.STATE_PENDING, f"state {invitation.state}"
    assert list(invitation.roles) == ["developer"], f"roles {invitation.roles}"
    assert invitation.email == MEMBER_EMAIL
    assert invitation.inviter == alice_user.name, f"inviter {invitation.inviter!r}"
    expect_error(
        "a second pending invitation for bob",
        grpc.StatusCode.ALREADY_EXISTS,
        lambda: alice(
            alice.members.CreateInvitation,
            api.member.CreateInvitationRequest(
                parent=org.name, invitation=api.member.Invitation(email=MEMBER_EMAIL)
            ),
        ),
    )

    step("bob sees the invitation and accepts it with the emailed token")
    mine = bob(bob.members.ListMyInvitations, api.member.ListMyInvitationsRequest())
    listed = [i for i in mine.invitations if i.name == invitation.name]
    assert len(listed) == 1, f"bob's invitations: {[i.name for i in mine.invitations]}"
    assert listed[0].organization == org.name
    assert listed[0].organization_display_name == ORG_DISPLAY_NAME
    token = emailed_invitation_token(MEMBER_EMAIL)
    member = bob(bob.members.AcceptInvitation, api.member.AcceptInvitationRequest(token=token))
    assert member.name == f"{org.name}/members/{bob_user.uid}", f"member {member.name!r}"
    assert member.user == bob_user.name, f"member user {member.user!r}"
    assert list(member.roles) == ["developer"], f"roles {member.roles}"
    assert member.inviter == alice_user.name, f"inviter {member.inviter!r}"
    assert "members.read" in member.effective_permissions, f"{member.effective_permissions}"
    assert "billing.manage" not in member.effective_permissions, f"{member.effective_permissions}"
    accepted = alice(alice.members.GetInvitation, api.member.GetInvitationRequest(name=invitation.name))
    assert accepted.state == api.member.Invitation.STATE_ACCEPTED, f"state {accepted.state}"
    assert accepted.member == member.name, f"invitation.member {accepted.member!r}"

    step("the same token cannot be used twice")
    err = expect_error(
        "accepting again",
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda: bob(bob.members.AcceptInvitation, api.member.AcceptInvitationRequest(token=token)),
    )
    kind, subject, description = precondition("accepting again", err)
    assert kind == "INVITATION_ACCEPTED", f"precondition type {kind!r}"
    assert subject == invitation.name, f"precondition subject {subject!r}"
    assert "already accepted" in description, description
    expect_error(
        "a token that was never issued",
        grpc.StatusCode.NOT_FOUND,
        lambda: bob(
            bob.members.AcceptInvitation, api.member.AcceptInvitationRequest(token=token[:-4] + "AAAA")
        ),
    )

    step("bob, a developer, may not change the plan")
    err = expect_error(
        "ChangePlan as a developer",
        grpc.StatusCode.PERMISSION_DENIED,
        lambda: bob(
            bob.billing.ChangePlan,
            api.billing.ChangePlanRequest(name=subscription_name, plan="plans/startup"),
        ),
    )
    assert "plans.manage" in err.details(), err.details()

    step("alice mints an API token that checks permissions")
    created = alice(
        alice.tokens.CreateApiToken,
        api.token.CreateApiTokenRequest(
            parent=org.name,
            api_token=api.token.ApiToken(
                display_name="permission checker", extra_permissions=["permissions.check"]
            ),
        ),
    )
    secret = created.secret
    assert secret.startswith("orgd_"), "the secret is shown once, as orgd_…"
    assert created.api_token.prefix and secret.startswith(created.api_token.prefix)
    assert created.api_token.name.startswith(f"{org.name}/"), f"token {created.api_token.name!r}"
    assert created.api_token.creator == alice_user.name, f"creator {created.api_token.creator!r}"
    assert list(created.api_token.extra_permissions) == ["permissions.check"]
    checker = Caller(api, channel, secret)

    def check(user, permission):
        return checker(
            checker.orgs.CheckPermission,
            api.org.CheckPermissionRequest(user=user, organization=org.name, permission=permission),
        ).allowed

    step("the token answers CheckPermission for bob and alice")
    assert check(bob_user.name, "members.read") is True, "a developer may read members"
    assert check(bob_user.name, "billing.manage") is False, "a developer may not manage billing"
    assert check(alice_user.name, "billing.manage") is True, "the owner may manage billing"
    err = expect_error(
        "CheckPermission of an unknown permission",
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: check(bob_user.name, "members.fly"),
    )
    field, description = field_violation("CheckPermission of an unknown permission", err)
    assert field == "permission", f"field {field!r}"
    assert "members.fly" in description, description
    expect_error(
        "the permissions.check token listing members",
        grpc.StatusCode.PERMISSION_DENIED,
        lambda: checker(
            checker.members.ListMembers, api.member.ListMembersRequest(parent=org.name)
        ),
    )
    expect_error(
        "bob's own sign-in asking CheckPermission",
        grpc.StatusCode.PERMISSION_DENIED,
        lambda: bob(
            bob.orgs.CheckPermission,
            api.org.CheckPermissionRequest(
                user=alice_user.name, organization=org.name, permission="org.read"
            ),
        ),
    )

    step("plans the organization cannot use yet are FAILED_PRECONDITION with details")

    def change_plan(plan, etag=""):
        return alice(
            alice.billing.ChangePlan,
            api.billing.ChangePlanRequest(name=subscription_name, plan=plan, etag=etag),
        )

    err = expect_error(
        "Hobby with two members",
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda: change_plan("plans/hobby"),
    )
    kind, subject, description = precondition("Hobby with two members", err)
    assert kind == "PLAN_LIMITS", f"precondition type {kind!r}"
    assert subject == org.name, f"precondition subject {subject!r}"
    assert "remove 1 member" in description, description
    err = expect_error(
        "Startup without a payment method",
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda: change_plan("plans/startup"),
    )
    kind, subject, description = precondition("Startup without a payment method", err)
    assert kind == "PAYMENT_METHOD_REQUIRED", f"precondition type {kind!r}"
    assert subject == subscription_name, f"precondition subject {subject!r}"
    assert "AddPaymentMethod" in description, description

    step("a malformed plan name is INVALID_ARGUMENT with a BadRequest field violation")
    err = expect_error(
        "a plan without plans/", grpc.StatusCode.INVALID_ARGUMENT, lambda: change_plan("startup")
    )
    field, description = field_violation("a plan without plans/", err)
    assert field == "plan", f"field {field!r}"
    assert "plans/" in description, description
    assert err.details().startswith("plan: "), f"the message names the field: {err.details()!r}"

    step("with a payment method, alice upgrades to Startup")
    card = alice(
        alice.billing.AddPaymentMethod,
        api.billing.AddPaymentMethodRequest(
            parent=org.name,
            payment_method=api.billing.PaymentMethod(
                processor_token="pm_card_visa", brand="visa", last4="4242", exp_month=12, exp_year=2031
            ),
        ),
    )
    assert card.default, "the first payment method is the default"
    assert card.last4 == "4242" and card.brand == "visa", f"card {card}"
    before = alice(
        alice.billing.GetSubscription, api.billing.GetSubscriptionRequest(name=subscription_name)
    )
    upgraded = change_plan("plans/startup", etag=before.etag)
    assert upgraded.plan == "plans/startup", f"plan {upgraded.plan}"
    assert upgraded.status == api.billing.Subscription.STATUS_ACTIVE
    assert upgraded.etag and upgraded.etag != before.etag, "the etag moves with the change"
    err = expect_error(
        "a change with the stale etag",
        grpc.StatusCode.ABORTED,
        lambda: change_plan("plans/team", etag=before.etag),
    )
    assert "etag" in err.details(), err.details()
    current = alice(
        alice.billing.GetSubscription, api.billing.GetSubscriptionRequest(name=subscription_name)
    )
    assert current.plan == "plans/startup", f"after the refused change: {current.plan}"

    step("the activity log lists every change, newest first")
    expected = [
        "subscription.change_plan",
        "payment_method.add",
        "api_token.create",
        "invitation.accept",
        "invitation.create",
        "organization.create",
    ]

    def list_activities(**fields):
        return alice(
            alice.activity.ListActivities,
            api.activity.ListActivitiesRequest(parent=org.name, **fields),
        )

    everything = list_activities(page_size=50)
    activities = list(everything.activities)
    actions = [a.action for a in activities]
    assert actions == expected, f"activities, newest first: {actions}"
    assert not everything.next_page_token, "one page holds them all"
    times = [a.create_time.ToDatetime() for a in activities]
    assert times == sorted(times, reverse=True), f"create times not newest first: {times}"
    by_action = {a.action: a for a in activities}
    created_org = by_action["organization.create"]
    assert created_org.actor == alice_user.name, f"actor {created_org.actor!r}"
    assert created_org.target == org.name, f"target {created_org.target!r}"
    assert created_org.request_id == CREATE_REQUEST_ID, f"request id {created_org.request_id!r}"
    assert by_action["invitation.accept"].actor == bob_user.name
    plan_change = by_action["subscription.change_plan"]
    assert plan_change.actor == alice_user.name
    assert all(a.name.startswith(f"{org.name}/activities/") for a in activities), (
        f"activity names {[a.name for a in activities]}"
    )

    step("page_size and page_token walk the same list")
    first = list_activities(page_size=4)
    assert [a.action for a in first.activities] == expected[:4], f"{first.activities}"
    assert first.next_page_token, "a second page follows"
    second = list_activities(page_size=4, page_token=first.next_page_token)
    assert [a.action for a in second.activities] == expected[4:], f"{second.activities}"
    assert not second.next_page_token, "the second page is the last"
    assert [a.name for a in first.activities] + [a.name for a in second.activities] == [
        a.name for a in activities
    ], "pages neither skip nor repeat"

    step("activities filter by action prefix and actor")
    invitations = list_activities(action="invitation.*")
    assert [a.action for a in invitations.activities] == ["invitation.accept", "invitation.create"]
    by_bob = list_activities(actor=bob_user.name)
    assert [a.action for a in by_bob.activities] == ["invitation.accept"]

    step("malformed paging is INVALID_ARGUMENT naming the field")
    for what, fields, expected_field in (
        ("a negative page_size", {"page_size": -1}, "page_size"),
        ("a forged page_token", {"page_token": "not-a-token"}, "page_token"),
    ):
        err = expect_error(what, grpc.StatusCode.INVALID_ARGUMENT, lambda: list_activities(**fields))
        field, _ = field_violation(what, err)
        assert field == expected_field, f"{what}: field {field!r}"


def main():
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="orgd-python-stubs-") as out_dir:
        step(f"generating stubs from {args.proto_dir}")
        names = generate_stubs(args.proto_dir, out_dir)
        sys.path.insert(0, out_dir)
        api = Api(names)
        # Straight to orgd, even where an http_proxy is set for everything else.
        channel = grpc.insecure_channel(args.addr, options=[("grpc.enable_http_proxy", 0)])
        with channel:
            grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT)
            run(api, channel, args.alice_token, args.bob_token)
    print("scenario-complete", flush=True)


if __name__ == "__main__":
    main()
