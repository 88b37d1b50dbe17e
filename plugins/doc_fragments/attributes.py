# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # What each attribute means, once; every module states only its support and details.
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check mode and predict whether it would change anything, without changing it.
  diff_mode:
    description: Returns what changed (or would change in check mode) when run with C(--diff).
  idempotent:
    description: A second run with the same arguments, outside check mode, reports no change.
"""
