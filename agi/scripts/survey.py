"""survey (Salesforce saveSurvey): one DTMF rating, queued for the CRM through the outbox.

Dialplan: `AGI(agi://127.0.0.1:4573/survey,${CALLERID(num)},<question>[,<agent extension>])`;
without the extension argument it is read from `[agi.survey] extension_variable`.
Sets SURVEY_RESULT (configurable name) to the digit once one was read.

A rating of the agent's own number is refused: that is an agent rating themselves (dialling
the survey directly), or the consult leg of an attended transfer, whose caller ID is the
agent's until the caller is joined.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from agi.channel import AgiChannel, PlaybackFailed
from agi.context import ScriptContext, SurveyResult
from agi.protocol import AgiHangup
from agi.scripts.registry import register_script
from agi.settings import SurveySettings
from crm.numbers import digits_only

log = logging.getLogger("pbxcrm.agi")


async def _play(channel: AgiChannel, prompt: str) -> None:
    if not prompt:
        return
    try:
        await channel.stream_file(prompt)
    except PlaybackFailed as exc:
        # A missing sound file must not cost the rating; if the caller hung up instead,
        # the next command says so (HANGUP / 511) and ends the survey there.
        log.warning("survey %s: %s", channel.env.uniqueid, exc)


def rates_the_agent(number: str, extension: str | None) -> bool:
    agent = digits_only(extension or "")
    return bool(agent) and digits_only(number) == agent


async def ask_rating(channel: AgiChannel, settings: SurveySettings) -> int | None:
    for attempt in range(1, settings.attempts + 1):
        digits = await channel.get_data(settings.question_prompt, settings.timeout_ms, 1)
        # One ASCII digit was asked for: anything longer (a broken or hostile reply of
        # thousands of digits, which int() refuses) or a non-ASCII digit is no rating.
        if len(digits) == 1 and digits in "0123456789":
            if settings.min_digit <= int(digits) <= settings.max_digit:
                return int(digits)
        log.info(
            "survey %s: attempt %d/%d got %s",
            channel.env.uniqueid,
            attempt,
            settings.attempts,
            repr(digits) if digits else "no digit (timeout)",
        )
        if digits and attempt < settings.attempts:
            await _play(channel, settings.invalid_prompt)
    return None


@register_script("survey")
async def survey(channel: AgiChannel, context: ScriptContext) -> str:
    env = channel.env
    settings = context.settings.survey
    args = [*env.args, "", "", ""]
    number = args[0] or env.callerid
    question = args[1] or settings.question
    extension: str | None = args[2] or None
    if rates_the_agent(number, extension):
        log.warning(
            "survey %s refused: the number to rate (%s) is the agent's own; an agent dialled"
            " the survey instead of transferring a caller to it",
            env.uniqueid,
            number,
        )
        return "refused"
    try:
        for prompt in settings.intro_prompts:
            await _play(channel, prompt)
        rating = await ask_rating(channel, settings)
    except AgiHangup:
        log.info("survey %s: caller %s hung up before rating", env.uniqueid, number)
        return "hangup"
    if rating is None:
        log.info("survey %s: no valid rating from %s", env.uniqueid, number)
        return "noinput"

    at = datetime.now(UTC)
    linkedid: str | None = None
    hung_up = False
    try:
        await channel.set_variable(settings.result_variable, str(rating))
        await channel.verbose(f"survey answer {rating}")
        if extension is None:
            extension = await channel.get_variable(settings.extension_variable) or None
        linkedid = await channel.get_variable("CHANNEL(linkedid)") or None
    except AgiHangup:
        # The rating is in hand; a caller leaving right after pressing it still counts.
        hung_up = True
    if rates_the_agent(number, extension):
        log.warning(
            "survey %s: rating %d dropped: the number rated (%s) is the agent's own",
            env.uniqueid,
            rating,
            number,
        )
        return "refused"
    result = SurveyResult(
        number=number,
        extension=extension,
        rating=rating,
        question=question,
        at=at,
        uniqueid=env.uniqueid,
        linkedid=linkedid,
        channel=env.channel,
    )
    try:
        await context.survey_sink(result)
    except Exception:
        # Keep the rating in the log so an operator can replay it by hand.
        log.exception("survey %s: could not queue %s", env.uniqueid, result.model_dump_json())
        return "error"
    log.info("survey %s: rating %d from %s queued", env.uniqueid, rating, number)
    if not hung_up:
        try:
            await _play(channel, settings.thanks_prompt)
        except AgiHangup:
            pass  # thanked nobody: the rating is saved, nothing else to do
    return "ok"
