"""crm_lookup (jtel ACD REST spec): the CRM's JSON record as channel variables.

Dialplan: `AGI(agi://127.0.0.1:4573/crm_lookup,<Function>,<UserData>,<UserData2>,<UserData3>)`.
CallerID and ServiceNumber come from the AGI environment, ServiceName from
`[agi.crm_lookup] service_names` by DID. Sets CRM_LOOKUP_STATUS, CRM_FOUND and, on FOUND,
the record flattened as `CRM_<ENTITY>_<FIELD>`.
"""

from __future__ import annotations

import logging

from agi.channel import AgiChannel
from agi.context import ScriptContext
from agi.scripts.registry import register_script
from agi.variables import flatten
from crm.lookup.base import LookupRequest, LookupStatus

log = logging.getLogger("pbxcrm.agi")

_FAILED = {"CRM_LOOKUP_STATUS": LookupStatus.ERROR.value, "CRM_FOUND": "0"}


def build_request(channel: AgiChannel, context: ScriptContext) -> LookupRequest:
    env = channel.env
    args = list(env.args)
    service_number = env.dnid or env.extension
    return LookupRequest(
        number=env.callerid,
        service_number=service_number or None,
        service_name=context.settings.crm_lookup.service_names.get(service_number, ""),
        function=args[0] if args else None,
        user_data=args[1:4],
    )


@register_script("crm_lookup", on_failure=_FAILED)
async def crm_lookup(channel: AgiChannel, context: ScriptContext) -> str:
    settings = context.settings.crm_lookup
    request = build_request(channel, context)
    if request.number:
        result = await context.lookup_within_budget(request, settings.source)
    else:
        # jtel's CallerID is mandatory; an anonymous caller cannot be looked up.
        result = None
    status = result.status if result else LookupStatus.NOTFOUND
    values = {
        "CRM_LOOKUP_STATUS": status.value,
        "CRM_FOUND": "1" if status is LookupStatus.FOUND else "0",
    }
    if result and status is LookupStatus.FOUND:
        # jtel: on 300 MULTIPLE "no records should be returned", so only FOUND is flattened.
        record = flatten(
            result.record,
            settings.variable_prefix,
            settings.max_variables,
            settings.max_value_bytes,
        )
        for name, value in record.items():
            values.setdefault(name, value)  # a CRM field may not overwrite the status
    if result and status is LookupStatus.ERROR:
        log.warning(
            "crm_lookup %s: lookup failed: %s (dialplan takes its fallback)",
            channel.env.uniqueid,
            result.error,
        )
    await channel.set_variables(values)
    return status.value.lower()
