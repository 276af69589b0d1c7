"""What a missed call's lead says, in words a head of sales reads: pure text from a ``MissedCall``.

Russian, as the product serves Russian sales teams (and as the amoCRM call note's ``call_result``
"Пропущен" already was); the reason's English key stays in brackets so a filter or a support engineer
finds it. Every CRM and both amoCRM modes use these words: lead title, comment, task, call note.
"""

from __future__ import annotations

import time

from callguard.leads.model import MissedCall

REASONS = {
    "abandoned": "клиент не дождался ответа и положил трубку",
    "timeout": "никто не ответил за время ожидания в очереди",
    "no_agents": "не было свободных менеджеров",
    "after_hours": "звонок в нерабочее время",
    "no_answer": "никто не взял трубку",
    "busy": "линия менеджера была занята",
    "hangup_before_queue": "клиент положил трубку до соединения с отделом продаж",
}
SHORT = {
    "abandoned": "не дождался ответа", "timeout": "не ответили в очереди", "no_agents": "нет свободных менеджеров",
    "after_hours": "нерабочее время", "no_answer": "не взяли трубку", "busy": "занято",
    "hangup_before_queue": "сбросил до соединения",
}


def reason_words(call: MissedCall) -> str:
    return f"{REASONS.get(call.reason, 'причина неизвестна')} ({call.reason})"


def title(call: MissedCall) -> str:
    """Short, but whole where nothing else carries text (an amoCRM Unsorted entry: its metadata holds the
    DID, the time and the wait, §1.6, and no free text): the reason, and a rebuilt call says so."""
    rebuilt = ", восстановлен по записи Asterisk" if call.reconciled else ""
    did = f" на {call.did}" if call.did else ""
    return f"Пропущенный звонок {call.caller}{did}: {SHORT.get(call.reason, call.reason)} ({call.reason}){rebuilt}"


def when(call: MissedCall) -> str:
    return time.strftime("%d.%m.%Y %H:%M:%S UTC", time.gmtime(call.started_at))


def text(call: MissedCall) -> str:
    """The full account: caller, DID, when, wait, reason, repeat count, rebuilt or not."""
    parts = [f"Пропущенный звонок от {call.caller}"
             + (f" ({call.caller_name})" if call.caller_name else "")
             + f" на номер {call.did or 'не определён'}, {when(call)}.",
             f"Ждал ответа {call.wait_s:.0f} с. Причина: {reason_words(call)}."]
    if call.misses > 1:
        parts.append(f"Повторный пропущенный звонок: {call.misses}-й от этого номера.")
    if call.reconciled:
        parts.append("Восстановлен по записи Asterisk (callguard не видел конец звонка).")
    return " ".join(parts)
