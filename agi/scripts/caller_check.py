"""caller_check (cal4care DBN spec): is the caller known? Known callers go to their agent.

Sets CRM_FOUND (1/0), CRM_LOOKUP_STATUS (FOUND/NOTFOUND/MULTIPLE/ERROR) and, when the source
knows them, CRM_CONTACT_NAME and CRM_OWNER_EXTENSION.
Dialplan: `AGI(agi://127.0.0.1:4573/caller_check[,number])`.
"""

from __future__ import annotations

import logging

from agi.channel import AgiChannel
from agi.context import ScriptContext
from agi.scripts.registry import register_script
from agi.variables import cut_value, safe_extension
from crm.lookup.base import LookupRequest, LookupResult, LookupStatus

log = logging.getLogger("pbxcrm.agi")

_FAILED = {"CRM_FOUND": "0", "CRM_LOOKUP_STATUS": LookupStatus.ERROR.value}


def caller_variables(result: LookupResult, max_value_bytes: int) -> dict[str, str]:
    # MULTIPLE is a known caller too, just without one record: the caller is not a stranger.
    found = result.status in (LookupStatus.FOUND, LookupStatus.MULTIPLE)
    # CRM_FOUND first: it is the variable the recorded lab script set, and the one a
    # minimal dialplan branches on.
    values = {"CRM_FOUND": "1" if found else "0", "CRM_LOOKUP_STATUS": result.status.value}
    if result.status is LookupStatus.FOUND:
        if result.contact_name:
            values["CRM_CONTACT_NAME"] = cut_value(result.contact_name, max_value_bytes)
        if extension := safe_extension(result.owner_extension):
            values["CRM_OWNER_EXTENSION"] = extension
    return values


@register_script("caller_check", on_failure=_FAILED)
async def caller_check(channel: AgiChannel, context: ScriptContext) -> str:
    env = channel.env
    settings = context.settings.caller_check
    if env.args and env.args[0]:
        number = env.args[0]
    else:
        number = await channel.get_variable(settings.number_variable) or ""
    if number:
        request = LookupRequest(number=number, service_number=env.dnid or env.extension or None)
        result = await context.lookup_within_budget(request)
    else:
        result = LookupResult(status=LookupStatus.NOTFOUND, error="no caller number")
    if result.status is LookupStatus.ERROR:
        log.warning(
            "caller_check %s: lookup for %s failed: %s (dialplan takes its fallback)",
            env.uniqueid,
            number,
            result.error,
        )
    else:
        # DEBUG, not INFO: one line per call was a tenth of a FastAGI session's CPU, and the
        # outcome is counted in pbxcrm_agi_sessions_total; failures stay a WARNING above.
        log.debug(
            "caller_check %s: %s is %s (source %s)",
            env.uniqueid,
            number or "anonymous",
            result.status.value,
            result.source or "-",
        )
    await channel.set_variables(
        caller_variables(result, context.settings.crm_lookup.max_value_bytes)
    )
    return result.status.value.lower()
