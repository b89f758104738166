"""
Local JWT checks: telling a JWT from an opaque token, choosing the key,
verifying the signature (with joserfc) and checking the registered claims.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import attr
from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, JWKRegistry, Key, OKPKey, RSAKey

from sealgw.auth._identity import Unauthorized

_SEGMENT = re.compile(r"^[A-Za-z0-9_-]*$")

# The key type and curve each accepted algorithm needs.
_KEY_FOR_ALG: dict[str, tuple[type, Optional[str]]] = {
    "RS256": (RSAKey, None),
    "RS384": (RSAKey, None),
    "RS512": (RSAKey, None),
    "PS256": (RSAKey, None),
    "ES256": (ECKey, "P-256"),
    "ES384": (ECKey, "P-384"),
    # Only Ed25519: Ed448 is not offered, and X25519 keys are for key
    # agreement, never signatures.
    "EdDSA": (OKPKey, "Ed25519"),
}

#: The key types a JWKS may hold that some accepted algorithm can use.
_KEY_TYPES = ("RSA", "EC", "OKP")

# RFC 9864 deprecates the name "EdDSA" in favour of "Ed25519", and joserfc
# warns on every EdDSA verification.  Identity providers sign with "EdDSA"
# today, and an operator who listed it in auth.oidc.algorithms chose it: a
# warning about the name would only be noise in the gateway's log.
warnings.filterwarnings(
    "ignore", message="EdDSA is deprecated", category=SecurityWarning, module="joserfc"
)


def b64url_decode(segment: str) -> bytes:
    if not _SEGMENT.match(segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def jwt_header(token: str) -> Optional[dict[str, Any]]:
    """
    The JOSE header of C{token} if it looks like a compact JWS (three
    base64url segments, the first a JSON object naming an C{alg}), else
    L{None}.  The signature segment may be empty, so C{alg: none} tokens
    are recognised as JWTs, and refused as such.
    """
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return None
    try:
        header = json.loads(b64url_decode(parts[0]))
        if not _SEGMENT.match(parts[1]) or not _SEGMENT.match(parts[2]):
            return None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or "alg" not in header:
        return None
    return header


def unverified_issue_time(token: str) -> Optional[float]:
    """
    The C{iat} claim of a compact JWS, read without checking its signature,
    or L{None} when it has no numeric one.  Only for choosing how to answer
    a token whose key is not held (see L{sealgw.auth._keys.SigningKeys}):
    whatever a forger writes there can only make that answer slower.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(claims, dict):
        return None
    iat = _number(claims.get("iat"))
    return iat if iat is not None and iat == iat and abs(iat) != float("inf") else None


@attr.frozen
class JWKS:
    """
    The issuer's signing keys as last fetched; replaced whole on refresh.
    """

    by_kid: Mapping[str, Key]
    unnamed: tuple[Key, ...]
    fetched_at: float

    def __len__(self) -> int:
        return len(self.by_kid) + len(self.unnamed)

    def find(self, kid: Optional[str], alg: str) -> Optional[Key]:
        """
        The key for C{kid}; a token without a C{kid} is matched only when
        exactly one key of the issuer suits its algorithm.

        @return: L{None} when this set holds no such key, which a newer set
            of the issuer's might.
        @raise Unauthorized: when this set settles it: the key named does
            not suit C{alg}, or the token names none and several would do.
        """
        if kid is not None:
            key = self.by_kid.get(kid)
            if key is not None and not key_suits(key, alg):
                raise Unauthorized("the token's signing key does not suit its algorithm")
            return key
        suitable = [k for k in (*self.by_kid.values(), *self.unnamed) if key_suits(k, alg)]
        if len(suitable) > 1:
            raise Unauthorized(
                "the token names no signing key (kid) and several of the issuer's would do"
            )
        return suitable[0] if suitable else None


def key_suits(key: Key, alg: str) -> bool:
    wanted = _KEY_FOR_ALG.get(alg)
    if wanted is None or not isinstance(key, wanted[0]):
        return False
    if wanted[1] is not None and key.get("crv") != wanted[1]:
        return False
    key_alg = key.get("alg")
    if key_alg is not None and key_alg != alg:
        return False
    use = key.get("use")
    return use is None or use == "sig"


def parse_jwks(document: Any, fetched_at: float) -> JWKS:
    """
    Import the public RSA, EC and OKP keys of a JWKS document; keys of
    other types (symmetric ones above all) and keys that fail to import are
    skipped, so one odd key does not stop the others being used.

    @raise ValueError: when the document is not a JWKS at all.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no keys list)")
    by_kid: dict[str, Key] = {}
    unnamed: list[Key] = []
    for item in document["keys"]:
        if not isinstance(item, dict) or item.get("kty") not in _KEY_TYPES:
            continue
        # Private parts, should an issuer publish them, are never kept.
        public = {k: v for k, v in item.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        try:
            key = JWKRegistry.import_key(public)
        except Exception:
            # Whatever joserfc makes of a malformed key (a KeyError for a
            # curve of another key type, among others), it is this key's
            # problem alone.
            continue
        kid = item.get("kid")
        if isinstance(kid, str) and kid:
            by_kid.setdefault(kid, key)
        else:
            unnamed.append(key)
    return JWKS(by_kid=by_kid, unnamed=tuple(unnamed), fetched_at=fetched_at)


def verify_signature(token: str, key: Key, alg: str) -> dict[str, Any]:
    """
    The claims of C{token} if C{key} signed it with C{alg}.

    @raise Unauthorized: for a bad signature or a payload that is not a
        JSON object.
    """
    try:
        obj = jws.deserialize_compact(token, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError):
        raise Unauthorized("the token's signature is not valid") from None
    try:
        claims = json.loads(obj.payload or b"")
    except (ValueError, UnicodeDecodeError):
        claims = None
    if not isinstance(claims, dict):
        raise Unauthorized("the token's payload is not a JSON object")
    return claims


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audience: Sequence[str],
    now: float,
    leeway: float,
) -> None:
    """
    Check C{iss}, C{aud}, C{exp} (required) and C{nbf} (when present).

    @raise Unauthorized: naming which check failed.
    """
    if claims.get("iss") != issuer:
        raise Unauthorized("the token was not issued by the configured issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in audience for a in audiences):
        raise Unauthorized("the token is not meant for this gateway (aud)")
    exp = _number(claims.get("exp"))
    if exp is None:
        raise Unauthorized("the token has no expiry time (exp)")
    if now > exp + leeway:
        raise Unauthorized("the token has expired", "expired")
    if "nbf" in claims:
        nbf = _number(claims.get("nbf"))
        if nbf is None:
            raise Unauthorized("the token's nbf is not a number")
        if now + leeway < nbf:
            raise Unauthorized("the token is not valid yet (nbf)", "not_yet_valid")
