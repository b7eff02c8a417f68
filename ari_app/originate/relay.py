"""The receiving half of click-to-call across instances sharing one store.

Another instance that took a request for an extension of our PBX left it in `originates` with
state "queued" and our pbx_id. Each poll claims such rows in one UPDATE that only one instance
wins (state queued -> pending), then sends each through our OriginateService; from there on its
state moves in the shared table as for a local request, so any instance's
`GET /api/v1/originate/{id}` shows the outcome. A claimed row is never claimed again, so the
Originate goes out at most once even if this instance dies right after claiming (the row then
stays "pending").
"""

from __future__ import annotations

import logging

from ari_app.originate.record_log import StoreOriginateLog
from ari_app.originate.service import OriginateService

log = logging.getLogger(__name__)


class OriginateRelay:
    def __init__(
        self,
        service: OriginateService,
        originate_log: StoreOriginateLog,
        pbx_id: str,
        *,
        max_age_seconds: float,
        batch: int = 20,
    ) -> None:
        self._service = service
        self._log = originate_log
        self._pbx_id = pbx_id
        self._max_age = max_age_seconds
        self._batch = batch

    async def poll(self) -> int:
        """Claim and send what is queued for our PBX; returns how many were sent."""
        sent = 0
        while True:
            records = await self._log.claim_queued(
                self._pbx_id, max_age_seconds=self._max_age, limit=self._batch
            )
            for record in records:
                log.info(
                    "relaying originate %s for extension %s (queued by another instance)",
                    record.id,
                    record.agent_extension,
                )
                await self._service.send_claimed(record)
                sent += 1
            if len(records) < self._batch:
                return sent
