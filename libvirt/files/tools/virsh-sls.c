/*
 * virsh-sls.c: commands for slsvirt, continuous checkpointing of QEMU
 *              domains into a single-level store
 *
 * A domain uses slsvirt when its <metadata> holds the element
 * <sls:slsvirt xmlns:sls="http://slsvirt.org/schemas/domain/1.0">; the
 * slsvirt libvirt hook then starts it with the slsvirt-pci device.  These
 * commands drive the device's QMP commands (query-sls, sls-checkpoint,
 * sls-restore, sls-mem-target) through virDomainQemuMonitorCommand, and
 * read the domain's store with slsctl (found on $PATH, or
 * $SLSVIRT_SLSCTL), so sls-list and the store size of sls-info need the
 * store on the host virsh runs on.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include <config.h>
#include "virsh-sls.h"

#include "internal.h"
#include "virbuffer.h"
#include "vircommand.h"
#include "virfile.h"
#include "virjson.h"
#include "virstring.h"
#include "virsh-util.h"
#include "virtime.h"
#include "virutil.h"
#include "virxml.h"
#include "vsh-table.h"

#include <libvirt/libvirt-qemu.h>

#define VIRSH_SLS_NS "http://slsvirt.org/schemas/domain/1.0"
#define VIRSH_SLS_DEFAULT_STORE "/var/lib/slsvirt"

typedef struct {
    char *store;                  /* store root; the domain's store is store/NAME */
    unsigned long long ceiling;   /* memory ceiling in bytes, 0: none */
    unsigned int periodMs;
} virshSlsConfig;

static void
virshSlsConfigClear(virshSlsConfig *cfg)
{
    g_clear_pointer(&cfg->store, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(virshSlsConfig, virshSlsConfigClear);


/*
 * Reads the domain's <sls:slsvirt> element.  @flags: VIR_DOMAIN_AFFECT_*.
 * A domain without it is an error: these commands are for slsvirt domains.
 */
static int
virshSlsGetConfig(vshControl *ctl,
                  virDomainPtr dom,
                  unsigned int flags,
                  virshSlsConfig *cfg)
{
    g_autofree char *xml = NULL;
    g_autoptr(xmlDoc) doc = NULL;
    g_autoptr(xmlXPathContext) ctxt = NULL;
    g_autofree char *period = NULL;
    g_autofree char *ceiling = NULL;
    g_autofree char *unit = NULL;

    if (!(xml = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT,
                                     VIRSH_SLS_NS, flags))) {
        vshResetLibvirtError();
        vshError(ctl, _("Domain '%1$s' does not use slsvirt: its metadata has no <slsvirt> element in namespace %2$s"),
                 virDomainGetName(dom), VIRSH_SLS_NS);
        return -1;
    }
    if (!(doc = virXMLParseStringCtxt(xml, _("(slsvirt metadata)"), &ctxt)))
        return -1;

    cfg->store = virXPathString("string(./*[local-name()='store']/@path)", ctxt);
    if (!cfg->store)
        cfg->store = g_strdup(VIRSH_SLS_DEFAULT_STORE);
    cfg->periodMs = 10;
    if ((period = virXPathString("string(./*[local-name()='checkpoint']/@period-ms)", ctxt)) &&
        virStrToLong_ui(period, NULL, 10, &cfg->periodMs) < 0) {
        vshError(ctl, _("invalid slsvirt period-ms '%1$s'"), period);
        return -1;
    }
    cfg->ceiling = 0;
    if ((ceiling = virXPathString("string(./*[local-name()='memory']/@ceiling)", ctxt))) {
        unit = virXPathString("string(./*[local-name()='memory']/@unit)", ctxt);
        if (virStrToLong_ullp(ceiling, NULL, 10, &cfg->ceiling) < 0 ||
            virScaleInteger(&cfg->ceiling, unit ? unit : "MiB", 1024 * 1024, ULLONG_MAX) < 0) {
            vshError(ctl, _("invalid slsvirt memory ceiling '%1$s'"), ceiling);
            return -1;
        }
    }
    return 0;
}


/*
 * Runs QMP command @name with @args (may be NULL; consumed) on @dom and
 * returns its "return" member.  virDomainQemuMonitorCommand succeeds even
 * when QEMU answers with an error, so the reply is checked here and a QMP
 * error is reported with its class.
 */
static virJSONValue *
virshSlsQMP(vshControl *ctl,
            virDomainPtr dom,
            const char *name,
            virJSONValue **args)
{
    g_autoptr(virJSONValue) command = NULL;
    g_autoptr(virJSONValue) reply = NULL;
    g_autofree char *cmdstr = NULL;
    g_autofree char *result = NULL;
    virJSONValue *noargs = NULL;
    virJSONValue *err;
    virJSONValue *ret = NULL;

    if (!args)
        args = &noargs;
    if (virJSONValueObjectAdd(&command,
                              "s:execute", name,
                              "A:arguments", args,
                              NULL) < 0)
        return NULL;
    if (!(cmdstr = virJSONValueToString(command, false)))
        return NULL;
    if (virDomainQemuMonitorCommand(dom, cmdstr, &result, 0) < 0)
        return NULL;

    if (!(reply = virJSONValueFromString(result))) {
        vshResetLibvirtError();
        vshError(ctl, _("QMP command '%1$s': cannot parse the reply: %2$s"),
                 name, result);
        return NULL;
    }
    if ((err = virJSONValueObjectGetObject(reply, "error"))) {
        const char *klass = virJSONValueObjectGetString(err, "class");
        const char *desc = virJSONValueObjectGetString(err, "desc");

        if (STREQ_NULLABLE(klass, "CommandNotFound"))
            vshError(ctl, _("QMP command '%1$s' failed: %2$s (%3$s): the domain's QEMU does not implement it"),
                     name, NULLSTR(desc), klass);
        else
            vshError(ctl, _("QMP command '%1$s' failed: %2$s (%3$s)"),
                     name, NULLSTR(desc), NULLSTR(klass));
        return NULL;
    }
    if (virJSONValueObjectRemoveKey(reply, "return", &ret) <= 0) {
        vshError(ctl, _("QMP command '%1$s': the reply has no 'return' member: %2$s"),
                 name, result);
        return NULL;
    }
    return ret;
}


static int
virshSlsGetUint(vshControl *ctl,
                virJSONValue *obj,
                const char *what,
                const char *key,
                unsigned long long *value)
{
    if (virJSONValueObjectGetNumberUlong(obj, key, value) < 0) {
        vshError(ctl, _("QMP command '%1$s': the reply has no number '%2$s'"),
                 what, key);
        return -1;
    }
    return 0;
}


/*
 * The domain's epochs as slsctl lists them (a JSON array), or NULL.
 */
static virJSONValue *
virshSlsListEpochs(vshControl *ctl,
                   virDomainPtr dom,
                   virshSlsConfig *cfg)
{
    g_autoptr(virCommand) cmd = NULL;
    g_autofree char *slsctl = NULL;
    g_autofree char *out = NULL;
    g_autofree char *errbuf = NULL;
    g_autoptr(virJSONValue) list = NULL;
    const char *env = getenv("SLSVIRT_SLSCTL");
    int status = 0;

    if (env && *env)
        slsctl = g_strdup(env);
    else if (!(slsctl = virFindFileInPath("slsctl"))) {
        vshError(ctl, "%s", _("slsctl not found on $PATH (set SLSVIRT_SLSCTL): it reads the domain's store"));
        return NULL;
    }

    cmd = virCommandNewArgList(slsctl, "ls", virDomainGetName(dom), "--json",
                               "--store-root", cfg->store, NULL);
    virCommandSetOutputBuffer(cmd, &out);
    virCommandSetErrorBuffer(cmd, &errbuf);
    if (virCommandRun(cmd, &status) < 0)
        return NULL;
    if (status != 0) {
        virTrimSpaces(errbuf, NULL);
        vshError(ctl, _("cannot read the store of domain '%1$s' in %2$s: %3$s"),
                 virDomainGetName(dom), cfg->store, NULLSTR_EMPTY(errbuf));
        return NULL;
    }
    if (!(list = virJSONValueFromString(out)) || !virJSONValueIsArray(list)) {
        vshResetLibvirtError();
        vshError(ctl, _("slsctl ls printed no JSON array: %1$s"), NULLSTR_EMPTY(out));
        return NULL;
    }
    return g_steal_pointer(&list);
}


static bool
virshSlsRequireActive(vshControl *ctl,
                      virDomainPtr dom)
{
    int active = virDomainIsActive(dom);

    if (active < 0)
        return false;
    if (active == 0) {
        vshError(ctl, _("Domain '%1$s' is not running"), virDomainGetName(dom));
        return false;
    }
    return true;
}


/*
 * "sls-checkpoint" command
 */
static const vshCmdInfo info_sls_checkpoint = {
    .help = N_("take a slsvirt checkpoint of a domain"),
    .desc = N_("Ask the domain's slsvirt engine for an epoch covering everything "
               "the domain did so far and print its number.  With --wait, wait "
               "until that epoch is durable in the store."),
};

static const vshCmdOptDef opts_sls_checkpoint[] = {
    VIRSH_COMMON_OPT_DOMAIN_FULL(VIR_CONNECT_LIST_DOMAINS_ACTIVE),
    {.name = "wait",
     .type = VSH_OT_BOOL,
     .help = N_("wait until the epoch is durable")
    },
    {.name = "timeout",
     .type = VSH_OT_INT,
     .help = N_("with --wait, give up after this many seconds (default 60)")
    },
    {.name = NULL}
};

static bool
cmdSlsCheckpoint(vshControl *ctl, const vshCmd *cmd)
{
    g_autoptr(virshDomain) dom = NULL;
    g_auto(virshSlsConfig) cfg = { 0 };
    g_autoptr(virJSONValue) ret = NULL;
    unsigned long long epoch;
    unsigned long long deadline;
    unsigned long long now;
    int timeout = 60;

    if (vshCommandOptInt(ctl, cmd, "timeout", &timeout) < 0)
        return false;
    if (timeout <= 0) {
        vshError(ctl, "%s", _("timeout must be positive"));
        return false;
    }
    VSH_REQUIRE_OPTION("timeout", "wait");

    if (!(dom = virshCommandOptDomain(ctl, cmd, NULL)))
        return false;
    if (virshSlsGetConfig(ctl, dom, 0, &cfg) < 0 ||
        !virshSlsRequireActive(ctl, dom))
        return false;

    if (!(ret = virshSlsQMP(ctl, dom, "sls-checkpoint", NULL)) ||
        virshSlsGetUint(ctl, ret, "sls-checkpoint", "epoch", &epoch) < 0)
        return false;

    if (!vshCommandOptBool(cmd, "wait")) {
        vshPrint(ctl, _("Epoch %1$llu requested\n"), epoch);
        return true;
    }

    if (virTimeMillisNow(&now) < 0)
        return false;
    deadline = now + timeout * 1000ULL;
    for (;;) {
        g_autoptr(virJSONValue) info = NULL;
        unsigned long long durable;
        unsigned long long failed;

        if (!(info = virshSlsQMP(ctl, dom, "query-sls", NULL)) ||
            virshSlsGetUint(ctl, info, "query-sls", "durable-epoch", &durable) < 0 ||
            virshSlsGetUint(ctl, info, "query-sls", "failed-epoch", &failed) < 0)
            return false;
        if (durable >= epoch) {
            vshPrint(ctl, _("Epoch %1$llu durable\n"), epoch);
            return true;
        }
        if (failed >= epoch) {
            vshError(ctl, _("Epoch %1$llu failed: %2$s"), epoch,
                     NULLSTR_EMPTY(virJSONValueObjectGetString(info, "last-error")));
            return false;
        }
        if (virTimeMillisNow(&now) < 0)
            return false;
        if (now >= deadline) {
            vshError(ctl, _("Epoch %1$llu not durable after %2$d seconds (last durable epoch %3$llu)"),
                     epoch, timeout, durable);
            return false;
        }
        g_usleep(10 * 1000);
    }
}


/*
 * "sls-info" command
 */
static const vshCmdInfo info_sls_info = {
    .help = N_("slsvirt checkpointing state of a domain"),
    .desc = N_("Show the state of the domain's slsvirt engine: checkpoint period, "
               "last durable epoch, vCPU stop time, and the size of its store."),
};

static const vshCmdOptDef opts_sls_info[] = {
    VIRSH_COMMON_OPT_DOMAIN_FULL(VIR_CONNECT_LIST_DOMAINS_ACTIVE),
    {.name = NULL}
};

static bool
cmdSlsInfo(vshControl *ctl, const vshCmd *cmd)
{
    g_autoptr(virshDomain) dom = NULL;
    g_auto(virshSlsConfig) cfg = { 0 };
    g_autoptr(virJSONValue) info = NULL;
    g_autoptr(virJSONValue) epochs = NULL;
    g_autofree char *storeDir = NULL;
    unsigned long long period = 0, effective = 0, current = 0, durable = 0;
    unsigned long long failed = 0, committed = 0, p50 = 0, p99 = 0, maxstop = 0;
    unsigned long long bytes = 0;
    size_t i;
    bool connected = false;
    const char *state;
    const char *lasterr;

    if (!(dom = virshCommandOptDomain(ctl, cmd, NULL)))
        return false;
    if (virshSlsGetConfig(ctl, dom, 0, &cfg) < 0 ||
        !virshSlsRequireActive(ctl, dom))
        return false;
    if (!(info = virshSlsQMP(ctl, dom, "query-sls", NULL)))
        return false;
    if (virshSlsGetUint(ctl, info, "query-sls", "period-ms", &period) < 0 ||
        virshSlsGetUint(ctl, info, "query-sls", "effective-period-ms", &effective) < 0 ||
        virshSlsGetUint(ctl, info, "query-sls", "current-epoch", &current) < 0 ||
        virshSlsGetUint(ctl, info, "query-sls", "durable-epoch", &durable) < 0 ||
        virshSlsGetUint(ctl, info, "query-sls", "failed-epoch", &failed) < 0 ||
        virshSlsGetUint(ctl, info, "query-sls", "epochs-committed", &committed) < 0 ||
        virshSlsGetUint(ctl, info, "query-sls", "stop-p50-ns", &p50) < 0 ||
        virshSlsGetUint(ctl, info, "query-sls", "stop-p99-ns", &p99) < 0 ||
        virshSlsGetUint(ctl, info, "query-sls", "max-stop-ns", &maxstop) < 0)
        return false;
    ignore_value(virJSONValueObjectGetBoolean(info, "connected", &connected));
    state = virJSONValueObjectGetString(info, "state");
    lasterr = virJSONValueObjectGetString(info, "last-error");

    vshPrint(ctl, "%-20s %s\n", _("Domain:"), virDomainGetName(dom));
    vshPrint(ctl, "%-20s %s\n", _("State:"), NULLSTR(state));
    vshPrint(ctl, "%-20s %s\n", _("Store connected:"), connected ? _("yes") : _("no"));
    if (period)
        vshPrint(ctl, "%-20s %llu ms (effective %llu ms)\n", _("Period:"), period, effective);
    else
        vshPrint(ctl, "%-20s %s\n", _("Period:"), _("on request only"));
    vshPrint(ctl, "%-20s %llu\n", _("Last durable epoch:"), durable);
    vshPrint(ctl, "%-20s %llu\n", _("Next epoch:"), current);
    vshPrint(ctl, "%-20s %llu\n", _("Failed epoch:"), failed);
    vshPrint(ctl, "%-20s %llu\n", _("Epochs committed:"), committed);
    vshPrint(ctl, "%-20s %.3f ms\n", _("Stop time p50:"), p50 / 1e6);
    vshPrint(ctl, "%-20s %.3f ms\n", _("Stop time p99:"), p99 / 1e6);
    vshPrint(ctl, "%-20s %.3f ms\n", _("Stop time max:"), maxstop / 1e6);
    vshPrint(ctl, "%-20s %s\n", _("Last error:"), lasterr && *lasterr ? lasterr : "-");
    if (cfg.ceiling)
        vshPrint(ctl, "%-20s %llu KiB\n", _("Memory ceiling:"), cfg.ceiling / 1024);

    storeDir = g_build_filename(cfg.store, virDomainGetName(dom), NULL);
    vshPrint(ctl, "%-20s %s\n", _("Store:"), storeDir);
    if (!(epochs = virshSlsListEpochs(ctl, dom, &cfg)))
        return false;
    for (i = 0; i < virJSONValueArraySize(epochs); i++) {
        unsigned long long b = 0;

        if (virJSONValueObjectGetNumberUlong(virJSONValueArrayGet(epochs, i), "bytes", &b) == 0)
            bytes += b;
    }
    vshPrint(ctl, "%-20s %llu bytes (%zu epochs)\n", _("Store size:"), bytes,
             virJSONValueArraySize(epochs));
    return true;
}


/*
 * "sls-list" command
 */
static const vshCmdInfo info_sls_list = {
    .help = N_("list the retained slsvirt epochs of a domain"),
    .desc = N_("List the epochs in the domain's slsvirt store: kind, parent, "
               "whether it can be restored, size and capture time.  The domain "
               "may be running or shut off; the store must be on this host."),
};

static const vshCmdOptDef opts_sls_list[] = {
    VIRSH_COMMON_OPT_DOMAIN_FULL(0),
    {.name = NULL}
};

static bool
cmdSlsList(vshControl *ctl, const vshCmd *cmd)
{
    g_autoptr(virshDomain) dom = NULL;
    g_auto(virshSlsConfig) cfg = { 0 };
    g_autoptr(virJSONValue) epochs = NULL;
    g_autoptr(vshTable) table = NULL;
    size_t i;

    if (!(dom = virshCommandOptDomain(ctl, cmd, NULL)))
        return false;
    if (virshSlsGetConfig(ctl, dom, 0, &cfg) < 0 ||
        !(epochs = virshSlsListEpochs(ctl, dom, &cfg)))
        return false;

    if (!(table = vshTableNew(_("Epoch"), _("Kind"), _("Parent"), _("Restorable"),
                              _("Bytes"), _("Captured"), NULL)))
        return false;
    for (i = 0; i < virJSONValueArraySize(epochs); i++) {
        virJSONValue *e = virJSONValueArrayGet(epochs, i);
        unsigned long long epoch = 0, parent = 0, bytes = 0;
        bool restorable = false;
        g_autofree char *epochStr = NULL;
        g_autofree char *parentStr = NULL;
        g_autofree char *bytesStr = NULL;
        g_autofree char *restorableStr = NULL;
        const char *why = virJSONValueObjectGetString(e, "why");

        ignore_value(virJSONValueObjectGetNumberUlong(e, "epoch", &epoch));
        ignore_value(virJSONValueObjectGetNumberUlong(e, "bytes", &bytes));
        ignore_value(virJSONValueObjectGetBoolean(e, "restorable", &restorable));
        epochStr = g_strdup_printf("%llu", epoch);
        bytesStr = g_strdup_printf("%llu", bytes);
        if (virJSONValueObjectGetNumberUlong(e, "parent", &parent) == 0)
            parentStr = g_strdup_printf("%llu", parent);
        else
            parentStr = g_strdup("-");
        if (restorable)
            restorableStr = g_strdup(_("yes"));
        else
            restorableStr = g_strdup_printf(_("no: %1$s"), NULLSTR(why));

        if (vshTableRowAppend(table, epochStr,
                              NULLSTR(virJSONValueObjectGetString(e, "kind")),
                              parentStr, restorableStr, bytesStr,
                              NULLSTR(virJSONValueObjectGetString(e, "captured")),
                              NULL) < 0)
            return false;
    }
    vshTablePrintToStdout(table, ctl);
    return true;
}


/*
 * "sls-restore" command
 */
static const vshCmdInfo info_sls_restore = {
    .help = N_("restore a domain from its slsvirt store"),
    .desc = N_("Start a shut off (destroyed or crashed) domain paused, load an "
               "epoch of its slsvirt store into it (by default the newest that "
               "verifies) and resume it."),
};

static const vshCmdOptDef opts_sls_restore[] = {
    VIRSH_COMMON_OPT_DOMAIN_FULL(VIR_CONNECT_LIST_DOMAINS_INACTIVE),
    {.name = "epoch",
     .type = VSH_OT_INT,
     .help = N_("epoch to restore (default: the newest that verifies)")
    },
    {.name = "paused",
     .type = VSH_OT_BOOL,
     .help = N_("leave the restored domain paused")
    },
    {.name = NULL}
};

static bool
cmdSlsRestore(vshControl *ctl, const vshCmd *cmd)
{
    g_autoptr(virshDomain) dom = NULL;
    g_auto(virshSlsConfig) cfg = { 0 };
    g_autoptr(virJSONValue) args = NULL;
    g_autoptr(virJSONValue) ret = NULL;
    unsigned long long epoch = 0;
    unsigned long long restored = 0;
    int active;
    int rc;

    if ((rc = vshCommandOptULongLong(ctl, cmd, "epoch", &epoch)) < 0)
        return false;
    if (rc > 0 && epoch == 0) {
        vshError(ctl, "%s", _("epoch must be 1 or more"));
        return false;
    }
    if (!(dom = virshCommandOptDomain(ctl, cmd, NULL)))
        return false;
    if ((active = virDomainIsActive(dom)) < 0)
        return false;
    if (active) {
        vshError(ctl, _("Domain '%1$s' is running: destroy it before restoring it from its store"),
                 virDomainGetName(dom));
        return false;
    }
    if (virshSlsGetConfig(ctl, dom, VIR_DOMAIN_AFFECT_CONFIG, &cfg) < 0)
        return false;

    /* The slsvirt hook gives the domain its device; QEMU waits in -S. */
    if (virDomainCreateWithFlags(dom, VIR_DOMAIN_START_PAUSED) < 0) {
        vshError(ctl, _("Failed to start domain '%1$s'"), virDomainGetName(dom));
        return false;
    }

    if (epoch && virJSONValueObjectAdd(&args, "U:epoch", epoch, NULL) < 0)
        goto destroy;
    if (!(ret = virshSlsQMP(ctl, dom, "sls-restore", &args)) ||
        virshSlsGetUint(ctl, ret, "sls-restore", "epoch", &restored) < 0)
        goto destroy;
    if (!vshCommandOptBool(cmd, "paused") && virDomainResume(dom) < 0) {
        vshError(ctl, _("Failed to resume domain '%1$s'"), virDomainGetName(dom));
        goto destroy;
    }
    vshPrint(ctl, _("Domain '%1$s' restored from epoch %2$llu\n"),
             virDomainGetName(dom), restored);
    return true;

 destroy:
    /* Never leave a half-restored domain running. */
    vshSaveLibvirtError();
    if (virDomainDestroy(dom) < 0)
        vshResetLibvirtError();
    vshError(ctl, _("Failed to restore domain '%1$s'; it was stopped again"),
             virDomainGetName(dom));
    return false;
}


/*
 * "sls-mem" command
 */
static const vshCmdInfo info_sls_mem = {
    .help = N_("set the slsvirt memory target of a domain"),
    .desc = N_("Ask the domain's guest, through the slsvirt device, to keep only "
               "SIZE of RAM in use and give the rest back to the host (memory "
               "elasticity, QMP sls-mem-target).  SIZE is in KiB unless it has "
               "a unit suffix; it may not exceed the domain's slsvirt memory "
               "ceiling, which is also given to the device (QMP "
               "sls-mem-ceiling) as the most RAM the guest may take back."),
};

static const vshCmdOptDef opts_sls_mem[] = {
    VIRSH_COMMON_OPT_DOMAIN_FULL(VIR_CONNECT_LIST_DOMAINS_ACTIVE),
    {.name = "target",
     .type = VSH_OT_INT,
     .required = true,
     .help = N_("RAM the guest keeps, in KiB unless a unit is given (e.g. 128M)")
    },
    {.name = NULL}
};

static bool
cmdSlsMem(vshControl *ctl, const vshCmd *cmd)
{
    g_autoptr(virshDomain) dom = NULL;
    g_auto(virshSlsConfig) cfg = { 0 };
    g_autoptr(virJSONValue) args = NULL;
    g_autoptr(virJSONValue) ret = NULL;
    unsigned long long target = 0;

    if (vshCommandOptScaledInt(ctl, cmd, "target", &target, 1024, ULLONG_MAX) < 0)
        return false;
    if (!(dom = virshCommandOptDomain(ctl, cmd, NULL)))
        return false;
    if (virshSlsGetConfig(ctl, dom, 0, &cfg) < 0 ||
        !virshSlsRequireActive(ctl, dom))
        return false;
    if (cfg.ceiling && target > cfg.ceiling) {
        vshError(ctl, _("target %1$llu KiB exceeds the domain's slsvirt memory ceiling of %2$llu KiB"),
                 target / 1024, cfg.ceiling / 1024);
        return false;
    }
    if (virJSONValueObjectAdd(&args, "U:size", target, NULL) < 0)
        return false;
    if (!(ret = virshSlsQMP(ctl, dom, "sls-mem-target", &args)))
        return false;
    if (cfg.ceiling) {
        /* The device enforces the ceiling on the guest's reclaims. */
        g_autoptr(virJSONValue) cargs = NULL;
        g_autoptr(virJSONValue) cret = NULL;

        if (virJSONValueObjectAdd(&cargs, "U:size", cfg.ceiling, NULL) < 0 ||
            !(cret = virshSlsQMP(ctl, dom, "sls-mem-ceiling", &cargs)))
            return false;
        vshPrint(ctl, _("Memory target of domain '%1$s' set to %2$llu KiB (ceiling %3$llu KiB)\n"),
                 virDomainGetName(dom), target / 1024, cfg.ceiling / 1024);
        return true;
    }
    vshPrint(ctl, _("Memory target of domain '%1$s' set to %2$llu KiB\n"),
             virDomainGetName(dom), target / 1024);
    return true;
}


const vshCmdDef slsCmds[] = {
    {.name = "sls-checkpoint",
     .handler = cmdSlsCheckpoint,
     .opts = opts_sls_checkpoint,
     .info = &info_sls_checkpoint,
     .flags = 0
    },
    {.name = "sls-info",
     .handler = cmdSlsInfo,
     .opts = opts_sls_info,
     .info = &info_sls_info,
     .flags = 0
    },
    {.name = "sls-list",
     .handler = cmdSlsList,
     .opts = opts_sls_list,
     .info = &info_sls_list,
     .flags = 0
    },
    {.name = "sls-mem",
     .handler = cmdSlsMem,
     .opts = opts_sls_mem,
     .info = &info_sls_mem,
     .flags = 0
    },
    {.name = "sls-restore",
     .handler = cmdSlsRestore,
     .opts = opts_sls_restore,
     .info = &info_sls_restore,
     .flags = 0
    },
    {.name = NULL}
};
