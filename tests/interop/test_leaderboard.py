"""Leaderboards across languages: Node writes, Python reads the ranks."""

import json
import random

from coord.v1 import leaderboard_pb2 as lb
from coord.v1 import leaderboard_pb2_grpc
from harness import finish, node, unique


def test_board_written_from_node_ranks_exactly_when_read_from_python(cluster, tmp_path):
    board = unique("interop-board")
    rng = random.Random(7)
    # int64 scores beyond 2^53 (where JavaScript numbers round), negatives,
    # ties, and members that submit again (BEST keeps the better score and the
    # time it was first reached).
    big = 2**62
    scores = [big + 1, big + 2, big, -big - 1, 2**53 + 1, 2**53, 0, -1, 5, 5, 5, 9_007_199_254_740_993]
    scores += [rng.randrange(-1000, 1000) for _ in range(28)]
    entries = [{"member": f"m{i:02}", "score": str(s), "metadata": f"player {i} ✓"} for i, s in enumerate(scores)]
    entries += [
        {"member": "m00", "score": str(big), "metadata": "worse: ignored"},
        {"member": "m06", "score": "7", "metadata": "better"},
        {"member": "m09", "score": "5", "metadata": "equal: ignored"},
    ]
    path = tmp_path / "entries.json"
    path.write_text(json.dumps(entries))
    writes = finish(node(["board-write", "--addr", cluster[1].addr, "--board", board, "--order",
                          "SORT_ORDER_DESCENDING", "--entries", str(path)]))
    assert len(writes) == len(entries)

    # The model: best score per member; ties by who reached it first.
    best = {}
    for seq, e in enumerate(entries):
        score = int(e["score"])
        if e["member"] not in best or score > best[e["member"]][0]:
            best[e["member"]] = (score, seq, e["metadata"])
    expected = sorted(best, key=lambda m: (-best[m][0], best[m][1]))

    boards = leaderboard_pb2_grpc.LeaderboardServiceStub(cluster[0].channel)
    top = boards.Top(lb.TopRequest(board=board, limit=100), timeout=10)
    assert top.count == len(expected)
    assert [e.member for e in top.entries] == expected
    assert [e.rank for e in top.entries] == list(range(1, len(expected) + 1))
    assert [e.score for e in top.entries] == [best[m][0] for m in expected]
    assert [e.metadata for e in top.entries] == [best[m][2] for m in expected]

    ranks = boards.GetRanks(lb.GetRanksRequest(board=board, members=["m01", "m03", "m06", "absent"]), timeout=10)
    by_member = {me.member: me for me in ranks.entries}
    for m in ["m01", "m03", "m06"]:
        assert by_member[m].entry.rank == expected.index(m) + 1
        assert by_member[m].entry.score == best[m][0]
    assert by_member["m01"].entry.score == 2**62 + 2  # exact past 2^53
    assert not by_member["absent"].HasField("entry")
