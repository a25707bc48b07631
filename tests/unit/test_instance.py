"""The instance core: name, mode, root and scope are read from the live settings, a new configuration reaches every
follower through one signal, and a change of name or mode waits while the instance is Active at its parent."""

from __future__ import annotations

import asyncio

from connected_registry.instance import Instance
from connected_registry.settings import validate_desired

CHILD = {"name": "line1-leaf", "mode": "ReadOnly", "repositories": ["factory/*"],
         "parent": {"endpoint": "http://parent.example:8000"}}


def test_the_embedded_default_is_an_open_read_write_root():
    core = Instance()
    assert (core.name, core.mode, core.is_root, core.repositories) == ("connected-registry", "ReadWrite", True, ())


def test_name_mode_and_scope_follow_the_applied_settings_without_copies():
    core = Instance()
    core.apply(validate_desired(CHILD))
    assert (core.name, core.mode, core.is_root, core.repositories) == ("line1-leaf", "ReadOnly", False, ("factory/*",))
    core.apply(validate_desired(dict(CHILD, name="line1-renamed", repositories=["factory/app"])))
    assert (core.name, core.repositories) == ("line1-renamed", ("factory/app",))


def test_a_root_is_read_write_whatever_its_mode_says_and_warns():
    core = Instance()
    core.apply(validate_desired({"name": "factory-root", "mode": "ReadOnly"}))
    assert core.is_root and core.mode == "ReadWrite" and core.status.has("MODE_IGNORED_ON_ROOT")


def test_every_follower_hears_each_change_in_the_order_it_subscribed():
    core, heard = Instance(), []
    core.settings_changed.subscribe(lambda previous, settings: heard.append(("first", previous, settings.name)))
    core.settings_changed.subscribe(lambda previous, settings: heard.append(("second", previous, settings.name)))
    first = validate_desired(CHILD)
    core.apply(first)
    core.apply(validate_desired(dict(CHILD, name="line1-renamed")))
    assert [(who, name) for who, _, name in heard] == [("first", "line1-leaf"), ("second", "line1-leaf"),
                                                       ("first", "line1-renamed"), ("second", "line1-renamed")]
    assert heard[0][1] is None and heard[2][1].name == "line1-leaf"


def test_a_new_name_or_mode_waits_while_active_and_the_rest_applies():
    core = Instance()
    core.apply(validate_desired(CHILD))
    core.active_at_parent = lambda: True
    core.apply(validate_desired(dict(CHILD, name="line1-renamed", mode="ReadWrite", anonymousPull=True)))
    assert (core.name, core.mode, core.settings.anonymousPull) == ("line1-leaf", "ReadOnly", True)
    assert core.status.has("CHANGE_NEEDS_DEACTIVATION")
    core.active_at_parent = lambda: False
    core.apply(validate_desired(dict(CHILD, name="line1-renamed")))
    assert core.name == "line1-renamed" and not core.status.has("CHANGE_NEEDS_DEACTIVATION")


async def test_the_tasks_of_an_instance_are_cancelled_together():
    core = Instance()
    tasks = [core.tasks.spawn(asyncio.sleep(3600), f"sleeper-{index}") for index in range(3)]
    await core.tasks.cancel_all()
    assert all(task.cancelled() for task in tasks)
