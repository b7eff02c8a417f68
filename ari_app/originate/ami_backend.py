"""Click-to-call over AMI: the `OriginateBackend` that sends an Originate action."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ari_app.originate.model import OutcomeUnknown, PbxUnavailable
from ari_app.pbx.ami.client import AmiActionTimeout, AmiConnectionLost, AmiNotConnected


class AmiOriginateBackend:
    """OriginateBackend over the AMI client (`ari_app.pbx.ami.client.AmiClient`)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def originate(self, action: dict[str, str], *, timeout: float) -> Mapping[str, str]:
        try:
            response = await self._client.originate(action, timeout=timeout)
        except AmiNotConnected as exc:
            raise PbxUnavailable(str(exc)) from exc
        except (AmiActionTimeout, AmiConnectionLost) as exc:
            raise OutcomeUnknown(str(exc)) from exc
        frame = getattr(response, "response", response)
        if not isinstance(frame, Mapping):
            raise PbxUnavailable(f"unexpected AMI answer {type(response).__name__}")
        return frame
