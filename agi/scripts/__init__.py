"""The IVR scripts, written once against agi.channel.AgiChannel; importing registers them."""

from agi.scripts import caller_check, crm_lookup, survey
from agi.scripts.registry import SCRIPTS, Script, register_script

__all__ = ["SCRIPTS", "Script", "caller_check", "crm_lookup", "register_script", "survey"]
