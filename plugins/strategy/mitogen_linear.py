"""Mitogen's linear strategy, from the ansible_mitogen package in the project's virtualenv (requirements.txt).

Mitogen keeps one Python interpreter per host for the whole run and sends it each module over the existing
connection, instead of starting a new `python3` on the host for every task; the tasks, their order and their
results are linear's. ansible.cfg names this directory and the strategy; `ANSIBLE_STRATEGY=linear` runs a
playbook without it. What it saves: README, "Numbers" (bench/converge.py).

Plays on the controller itself (`connection: local`: Molecule's create and destroy) run as plain linear: there is
no connection to save there, and Mitogen's async jobs never finish for community.docker's modules (measured with
docker_container, async and poll 0: the job file stays "started" for good).
"""

from __future__ import annotations

import ansible.plugins.strategy.linear
import ansible_mitogen.strategy


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, ansible.plugins.strategy.linear.StrategyModule):
    def run(self, iterator, play_context, result=0):  # noqa: ANN001, ANN201 (ansible's signature)
        if iterator._play.connection == "local":  # the play as written (Molecule: create, destroy)
            return ansible.plugins.strategy.linear.StrategyModule.run(self, iterator, play_context)
        return super().run(iterator, play_context, result)
