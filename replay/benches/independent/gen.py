#!/usr/bin/env python3
"""A second traffic generator for the held-out quality check (BENCHMARKS.md, "A second
independent check"). Written by a helper from the issue's replay contract alone, without
reading the engine, the greedy baseline or `workload.rs`: seven traffic shapes unlike
`WorkloadSpec::mixed` (uniform and bimodal ratings, party members rated apart or
independently, RTT maps listing only the home region or missing datacenters, bursty
arrivals, junk lines). Standard library only. Contest its files with the Rust greedy:

    python3 gen.py --shape ffa_bigparty --rate 100 --seed 1 --out /tmp/ev/ffa-100-1.jsonl
    RALLY_QUALITY_EVENTS=/tmp/ev/ffa-100-1.jsonl cargo bench -p rally-replay --bench quality_sweep

`--write-modes DIR` writes its two rules files: the wide one is `examples/modes.toml`'s
rules; the narrow one (`modes_narrow.toml` here) has slower, narrower windows and 250 ms
ticks (`RALLY_QUALITY_MODES=replay/benches/independent/modes_narrow.toml`).

usage: gen.py --shape NAME --rate R --seed S [--duration-s 60] --out EVENTS.jsonl
       gen.py --list
       gen.py --write-modes DIR
"""
import argparse
import json
import math
import random
import sys

REGIONS = {
    "eu": ["eu-west", "eu-central", "eu-north"],
    "na": ["na-east", "na-west"],
    "ap": ["ap-southeast", "ap-northeast"],
}
# rough "ms" coordinates of datacenters; RTT ~ 8 + distance + jitter
DC_POS = {
    "eu-west": (0.0, 0.0), "eu-central": (14.0, 2.0), "eu-north": (10.0, 16.0),
    "na-east": (-75.0, -5.0), "na-west": (-115.0, 0.0),
    "ap-southeast": (125.0, -40.0), "ap-northeast": (150.0, 5.0),
}
ALL_DCS = [d for r in REGIONS.values() for d in r]
BOGUS_DCS = ["eu-south", "sa-east", "me-central", "local"]

MODES = {
    "duel-1v1": (2, 1),
    "trio-3v3": (2, 3),
    "squad-5v5": (2, 5),
    "ffa-8": (8, 1),
}

WIDE = {
    "tick_ms": 100,
    "duel-1v1": ((50.0, 10.0, 400.0), (60.0, 5.0, 150.0)),
    "trio-3v3": ((80.0, 12.0, 450.0), (70.0, 6.0, 160.0)),
    "squad-5v5": ((100.0, 15.0, 500.0), (80.0, 8.0, 180.0)),
    "ffa-8": ((120.0, 15.0, 600.0), (80.0, 8.0, 180.0)),
}
NARROW = {
    "tick_ms": 250,
    "duel-1v1": ((25.0, 3.0, 150.0), (40.0, 2.0, 80.0)),
    "trio-3v3": ((40.0, 4.0, 200.0), (50.0, 2.0, 90.0)),
    "squad-5v5": ((50.0, 5.0, 250.0), (50.0, 3.0, 100.0)),
    "ffa-8": ((60.0, 5.0, 300.0), (50.0, 3.0, 100.0)),
}


def modes_toml(cfg):
    out = [f"tick_ms = {cfg['tick_ms']}", "", "[regions]"]
    for r, dcs in REGIONS.items():
        out.append(f"{r} = [" + ", ".join(f'"{d}"' for d in dcs) + "]")
    for name, (teams, size) in MODES.items():
        (ms, mg, mm), (rs, rg, rm) = cfg[name]
        out += ["", "[[mode]]", f'name = "{name}"', f"teams = {teams}", f"team_size = {size}",
                f"mmr_window = {{ start = {ms}, growth_per_s = {mg}, max = {mm} }}",
                f"max_rtt_ms = {{ start = {rs}, growth_per_s = {rg}, max = {rm} }}"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- shapes
# rating: normal | uniform | bimodal
# party:  clustered | spread | independent
# rtt:    all | home | missing | mixed   (mixed = per player random of the three)
# arrivals: even | poisson | bursty
SHAPES = {
    "baseline": dict(rating="normal", party="clustered", rtt="all", arrivals="even",
                     modes={"duel-1v1": .30, "trio-3v3": .25, "squad-5v5": .30, "ffa-8": .15},
                     sq_party=[.55, .2, .12, .08, .05], tr_party=[.6, .25, .15],
                     regions={"eu": .45, "na": .35, "ap": .20}, cancel=0.05, bogus=0.0, junk=0.0),
    "uniform_home": dict(rating="uniform", party="spread", rtt="home", arrivals="poisson",
                         modes={"duel-1v1": .20, "trio-3v3": .35, "squad-5v5": .35, "ffa-8": .10},
                         sq_party=[.25, .25, .2, .15, .15], tr_party=[.35, .35, .30],
                         regions={"eu": .40, "na": .40, "ap": .20}, cancel=0.08, bogus=0.0, junk=0.0),
    "bimodal_missing": dict(rating="bimodal", party="independent", rtt="missing", arrivals="poisson",
                            modes={"duel-1v1": .15, "trio-3v3": .20, "squad-5v5": .50, "ffa-8": .15},
                            sq_party=[.4, .2, .15, .15, .10], tr_party=[.5, .3, .2],
                            regions={"eu": .45, "na": .35, "ap": .20}, cancel=0.10, bogus=0.3, junk=0.0),
    "duel_rush": dict(rating="normal", party="clustered", rtt="mixed", arrivals="bursty",
                      modes={"duel-1v1": .70, "trio-3v3": .10, "squad-5v5": .10, "ffa-8": .10},
                      sq_party=[.6, .2, .1, .05, .05], tr_party=[.7, .2, .1],
                      regions={"eu": .50, "na": .30, "ap": .20}, cancel=0.07, bogus=0.05, junk=0.0),
    "ffa_bigparty": dict(rating="uniform", party="clustered", rtt="all", arrivals="even",
                         modes={"duel-1v1": .10, "trio-3v3": .20, "squad-5v5": .30, "ffa-8": .40},
                         sq_party=[.1, .1, .2, .3, .3], tr_party=[.2, .3, .5],
                         regions={"eu": .35, "na": .35, "ap": .30}, cancel=0.06, bogus=0.0, junk=0.0),
    "ap_skew_spread": dict(rating="bimodal", party="spread", rtt="mixed", arrivals="poisson",
                           modes={"duel-1v1": .25, "trio-3v3": .25, "squad-5v5": .30, "ffa-8": .20},
                           sq_party=[.35, .25, .2, .1, .1], tr_party=[.4, .4, .2],
                           regions={"eu": .20, "na": .25, "ap": .55}, cancel=0.09, bogus=0.1, junk=0.0),
    "junk_mix": dict(rating="normal", party="independent", rtt="mixed", arrivals="poisson",
                     modes={"duel-1v1": .25, "trio-3v3": .25, "squad-5v5": .30, "ffa-8": .20},
                     sq_party=[.3, .2, .2, .15, .15], tr_party=[.4, .3, .3],
                     regions={"eu": .45, "na": .35, "ap": .20}, cancel=0.07, bogus=0.2, junk=0.02),
}


def wchoice(rng, weights):
    keys = list(weights)
    return rng.choices(keys, [weights[k] for k in keys])[0]


def draw_rating(rng, kind):
    if kind == "normal":
        r = rng.gauss(1500, 300)
    elif kind == "uniform":
        r = rng.uniform(500, 2500)
    elif kind == "bimodal":
        r = rng.gauss(1100, 150) if rng.random() < 0.55 else rng.gauss(1950, 150)
    else:
        raise ValueError(kind)
    return round(max(0.0, r), 1)


def party_ratings(rng, kind, party, n):
    lead = draw_rating(rng, kind)
    if n == 1:
        return [lead]
    if party == "clustered":
        return [lead] + [round(max(0.0, lead + rng.uniform(-50, 50)), 1) for _ in range(n - 1)]
    if party == "spread":
        s = rng.uniform(100, 300)
        lo = lead - rng.uniform(0, s)
        pts = [lo, lo + s] + [lo + rng.uniform(0, s) for _ in range(n - 2)]
        rng.shuffle(pts)
        return [round(max(0.0, p), 1) for p in pts]
    if party == "independent":
        return [lead] + [draw_rating(rng, kind) for _ in range(n - 1)]
    raise ValueError(party)


def rtt_map(rng, kind, home_region, loc, bogus):
    if kind == "mixed":
        kind = rng.choices(["all", "home", "missing"], [0.5, 0.3, 0.2])[0]
    dcs = ALL_DCS if kind in ("all", "missing") else REGIONS[home_region]
    m = {}
    for d in dcs:
        x, y = DC_POS[d]
        dist = math.hypot(x - loc[0], y - loc[1])
        m[d] = round(8.0 + dist * rng.uniform(0.9, 1.3) + abs(rng.gauss(0, 6)), 1)
    if kind == "missing":
        for d in list(m):
            if rng.random() < 0.3:
                del m[d]
        # a few players keep nothing in their home region at all
    if bogus and rng.random() < bogus:
        m[rng.choice(BOGUS_DCS)] = round(rng.uniform(5, 40), 1)
    return m


def gen(shape_name, rate, seed, duration_s=60.0):
    sh = SHAPES[shape_name]
    rng = random.Random(f"{shape_name}/{rate}/{seed}")
    n = int(round(rate * duration_s))
    # arrival times
    times = []
    if sh["arrivals"] == "even":
        times = [int(i * 1000.0 / rate) for i in range(n)]
    elif sh["arrivals"] == "poisson":
        t = 0.0
        for _ in range(n):
            times.append(int(t))
            t += rng.expovariate(rate / 1000.0)
    elif sh["arrivals"] == "bursty":
        # Poisson with a rate modulated by a square wave: 3x for 2s then 1/3x for 4s
        t = 0.0
        for _ in range(n):
            times.append(int(t))
            phase = (t / 1000.0) % 6.0
            r = rate * (2.0 if phase < 2.0 else 0.5)
            t += rng.expovariate(r / 1000.0)
    events = []
    pid = 0
    for i, at in enumerate(times):
        tid = f"t{i + 1}"
        mode = wchoice(rng, sh["modes"])
        teams, size = MODES[mode]
        if mode == "squad-5v5":
            k = rng.choices(range(1, 6), sh["sq_party"])[0]
        elif mode == "trio-3v3":
            k = rng.choices(range(1, 4), sh["tr_party"])[0]
        else:
            k = 1
        region = wchoice(rng, sh["regions"])
        home = rng.choice(REGIONS[region])
        hx, hy = DC_POS[home]
        loc = (hx + rng.gauss(0, 12), hy + rng.gauss(0, 12))
        mm = party_ratings(rng, sh["rating"], sh["party"], k)
        players = []
        for r in mm:
            pid += 1
            ploc = (loc[0] + rng.gauss(0, 4), loc[1] + rng.gauss(0, 4))
            players.append({"id": f"p{pid}", "mmr": r,
                            "rtt_ms": rtt_map(rng, sh["rtt"], region, ploc, sh["bogus"])})
        ev = {"at_ms": at, "op": "enqueue", "ticket": tid, "mode": mode, "players": players}
        if sh["junk"] and rng.random() < sh["junk"]:
            kind = rng.choice(["bad_mode", "oversize", "empty"])
            if kind == "bad_mode":
                ev["mode"] = "squad-4v4"
            elif kind == "oversize":
                ev["mode"] = "duel-1v1" if rng.random() < 0.5 else "trio-3v3"
                size = MODES[ev["mode"]][1]
                while len(ev["players"]) <= size:
                    pid += 1
                    ev["players"].append({"id": f"p{pid}", "mmr": draw_rating(rng, sh["rating"]),
                                          "rtt_ms": dict(players[0]["rtt_ms"])})
            else:
                ev["players"] = []
        events.append((at, 0, i, ev))
        if rng.random() < sh["cancel"]:
            delay = rng.choice([rng.uniform(100, 3000), rng.uniform(3000, 30000), rng.expovariate(1 / 8000.0)])
            events.append((at + int(delay), 1, i, {"at_ms": at + int(delay), "op": "cancel", "ticket": tid}))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return [e[3] for e in events]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape")
    ap.add_argument("--rate", type=float)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--out")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--write-modes")
    a = ap.parse_args()
    if a.list:
        print("\n".join(SHAPES))
        return
    if a.write_modes:
        with open(f"{a.write_modes}/modes_wide.toml", "w") as f:
            f.write(modes_toml(WIDE))
        with open(f"{a.write_modes}/modes_narrow.toml", "w") as f:
            f.write(modes_toml(NARROW))
        return
    evs = gen(a.shape, a.rate, a.seed, a.duration_s)
    out = open(a.out, "w") if a.out else sys.stdout
    for e in evs:
        out.write(json.dumps(e, separators=(",", ":")) + "\n")
    if a.out:
        out.close()


if __name__ == "__main__":
    main()
