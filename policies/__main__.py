"""Entry point of the policy pack: `pulumi preview --policy-pack policies`."""

from pulumi_policy import PolicyPack
from pulumi_policy import deserialize

from policies import once_per_call
from policies.pack import ENFORCEMENT, PACK_NAME, POLICIES
from policies.validators import mark_secret

# pulumi_policy unwraps secrets into plain values, which would hide from
# `secrets-are-secret` whether a value was one. Keep the marker: a secret string
# arrives as `Secret`, a str subclass every other validator reads as a str.
_unwrap = deserialize._deserialize_property  # pylint: disable=protected-access


def _keep_secret_marker(prop, proxy_secrets=False):
    # pulumi-policy >= 1.8 passes proxy_secrets down the recursion; keep its signature.
    if isinstance(prop, dict) and prop.get(deserialize.SPECIAL_SIG_KEY) == deserialize.SPECIAL_SECRET_SIG:
        return mark_secret(_unwrap(prop["value"], proxy_secrets))
    return _unwrap(prop, proxy_secrets)


deserialize._deserialize_property = _keep_secret_marker  # pylint: disable=protected-access

once_per_call.install()
PolicyPack(name=PACK_NAME, enforcement_level=ENFORCEMENT, policies=POLICIES)
