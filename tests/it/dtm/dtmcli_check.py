"""Drives Concord's DTM-compatible API with DTM's own Python client (PyPI
dtmcli), the way its README shows: a TCC transaction that commits, one
whose second Try refuses (the client aborts), a saga and a 2-phase message.
Run by tests/it/dtm/sdk.rs: argv[1] is the DTM API
(http://host:port/api/dtmsvr), argv[2] the test's service
(http://host:port/api/busi). Prints the gids as one JSON object."""

import json
import sys

from dtmcli import msg, saga, tcc, utils

dtm, busi = sys.argv[1], sys.argv[2]
out = {}


def branches(refuse_second):
    def run(t):
        t.call_branch({"amount": 30}, busi + "/TransOutTry",
                      busi + "/TransOutConfirm", busi + "/TransOutCancel")
        t.call_branch({"amount": 30}, busi + ("/RefuseTry" if refuse_second else "/TransInTry"),
                      busi + "/TransInConfirm", busi + "/TransInCancel")
    return run


out["tcc_ok"] = tcc.tcc_global_transaction(dtm, utils.gen_gid(dtm), branches(False))
out["tcc_refused"] = utils.gen_gid(dtm)
# Returns "" after aborting when a Try fails.
out["tcc_refused_result"] = tcc.tcc_global_transaction(dtm, out["tcc_refused"], branches(True))

out["saga"] = utils.gen_gid(dtm)
s = saga.Saga(dtm, out["saga"])
s.add({"amount": 30}, busi + "/TransOut", busi + "/TransOutRevert")
s.add({"amount": 30}, busi + "/TransIn", busi + "/TransInRevert")
s.submit()

out["msg"] = utils.gen_gid(dtm)
m = msg.Msg(dtm, out["msg"])
m.add({"amount": 30}, busi + "/TransOut")
m.add({"amount": 30}, busi + "/TransIn")
m.prepare(busi + "/QueryPrepared")
m.submit()

print(json.dumps(out))
