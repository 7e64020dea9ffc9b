/*
 * virsh-sls.h: commands for slsvirt, continuous checkpointing of QEMU
 *              domains into a single-level store
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include "virsh.h"

extern const vshCmdDef slsCmds[];
