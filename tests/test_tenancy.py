"""
Tenant ids and the choice of tenant for a request.
"""

from __future__ import annotations

import re
import string

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sealgw.tenancy import (
    MAX_TENANT_LENGTH,
    TenantError,
    TenantForbidden,
    TenantRequired,
    choose_tenant,
    parse_tenant,
    parse_tenant_header,
)

deterministic = settings(derandomize=True, deadline=None, max_examples=300)

TENANT_ALPHABET = string.ascii_letters + string.digits + "!-_.*'()"
valid_tenants = st.text(alphabet=TENANT_ALPHABET, min_size=1, max_size=MAX_TENANT_LENGTH).filter(
    lambda t: t not in (".", "..")
)
_VALID = re.compile(r"[A-Za-z0-9!\-_.*'()]{1,150}")


class ParseTenantTests(SynchronousTestCase):
    @deterministic
    @given(valid_tenants)
    def test_valid_accepted(self, tenant: str) -> None:
        self.assertEqual(parse_tenant(tenant), tenant)
        self.assertEqual(parse_tenant_header(tenant), (tenant,))

    @deterministic
    @given(st.text(max_size=200))
    def test_matches_the_rule(self, value: str) -> None:
        """
        Anything at all is accepted exactly when it follows PROTOCOLS §5.
        """
        ok = bool(_VALID.fullmatch(value)) and value not in (".", "..")
        try:
            parse_tenant(value)
        except TenantError as e:
            self.assertFalse(ok)
            # The message never repeats what was sent.
            if len(value) > 3:
                self.assertNotIn(value, str(e))
        else:
            self.assertTrue(ok)

    def test_dots(self) -> None:
        for value in (".", ".."):
            self.assertRaises(TenantError, parse_tenant, value)
        self.assertEqual(parse_tenant("..."), "...")
        self.assertEqual(parse_tenant(".a"), ".a")

    def test_trailing_newline(self) -> None:
        """
        A regular expression anchored with "$" would let "a\\n" through.
        """
        self.assertRaises(TenantError, parse_tenant, "a\n")
        self.assertRaises(TenantError, parse_tenant, "a\r\n")

    def test_length(self) -> None:
        self.assertEqual(parse_tenant("a" * 150), "a" * 150)
        self.assertRaises(TenantError, parse_tenant, "a" * 151)
        self.assertRaises(TenantError, parse_tenant, "")

    @deterministic
    @given(st.lists(valid_tenants, min_size=2, max_size=5))
    def test_multi_tenant_refused_without_federation(self, tenants: list[str]) -> None:
        self.assertRaises(TenantError, parse_tenant_header, "|".join(tenants))

    @deterministic
    @given(st.lists(valid_tenants, min_size=1, max_size=5))
    def test_multi_tenant_with_federation(self, tenants: list[str]) -> None:
        parsed = parse_tenant_header("|".join(tenants), federation=True)
        self.assertEqual(list(parsed), list(dict.fromkeys(tenants)))

    @deterministic
    @given(valid_tenants, st.sampled_from(["", " ", "/", "..", "a b", "\u00e9"]))
    def test_one_bad_part_spoils_federation(self, good: str, bad: str) -> None:
        self.assertRaises(TenantError, parse_tenant_header, f"{good}|{bad}", federation=True)


class ChooseTenantTests(SynchronousTestCase):
    def test_one_tenant_header_omitted(self) -> None:
        self.assertEqual(choose_tenant(None, frozenset(["a"])), "a")
        self.assertEqual(choose_tenant([], frozenset(["a"])), "a")

    def test_one_tenant_header_given(self) -> None:
        self.assertEqual(choose_tenant(["a"], frozenset(["a"])), "a")

    def test_several_tenants_need_the_header(self) -> None:
        e = self.assertRaises(
            TenantRequired, choose_tenant, None, frozenset(["a", "b"]), header="X-Tenant"
        )
        self.assertIn("X-Tenant", str(e))
        self.assertEqual(choose_tenant(["b"], frozenset(["a", "b"])), "b")

    def test_forbidden(self) -> None:
        e = self.assertRaises(TenantForbidden, choose_tenant, ["c"], frozenset(["a", "b"]))
        self.assertEqual(e.tenant, "c")

    def test_malformed(self) -> None:
        self.assertRaises(TenantError, choose_tenant, ["a/b"], frozenset(["a"]))

    def test_sent_twice(self) -> None:
        self.assertRaises(TenantError, choose_tenant, ["a", "a"], frozenset(["a"]))

    def test_federation(self) -> None:
        allowed = frozenset(["a", "b", "c"])
        self.assertRaises(TenantError, choose_tenant, ["a|b"], allowed)
        self.assertEqual(choose_tenant(["a|b"], allowed, federation=True), "a|b")
        self.assertEqual(choose_tenant(["b|a|b"], allowed, federation=True), "b|a")
        self.assertRaises(TenantForbidden, choose_tenant, ["a|d"], allowed, federation=True)

    @deterministic
    @given(
        st.sets(valid_tenants, min_size=1, max_size=4),
        st.one_of(st.none(), st.text(max_size=40), valid_tenants),
        st.booleans(),
    )
    def test_never_outside_allowed(
        self, allowed: set[str], header: str | None, federation: bool
    ) -> None:
        """
        Whatever the header says, the answer names only allowed tenants, or
        the request is refused.
        """
        try:
            chosen = choose_tenant(
                None if header is None else [header], frozenset(allowed), federation=federation
            )
        except (TenantError, TenantForbidden):
            return
        parts = chosen.split("|")
        self.assertTrue(set(parts) <= allowed)
        if not federation:
            self.assertEqual(len(parts), 1)
