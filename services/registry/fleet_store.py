"""Every query about the fleet: nodes, the instances placed on them, chute demand, and the work
the outbox carries to miners. (store.py: chutes; image_store.py: images.)

Instance rows are the truth the gateway follows (a trigger announces each change, routing.py
applies it), so every change here is a change of routing: READY makes an instance routable,
deleting its row or marking it stopping takes it out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

#: Outbox kinds of work for a node (payload.node_id names it).
LAUNCH, STOP = "instance_launch", "instance_stop"


async def _emit(connection: Any, kind: str, payload: Mapping[str, Any]) -> None:
    """Work into the outbox, in the caller's transaction (announced by NOTIFY on commit)."""
    await connection.execute(
        "INSERT INTO outbox (kind, payload) VALUES ($1, $2::jsonb)", kind, json.dumps(payload)
    )


def node_id_of(user_id: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{user_id}:{name}"))


async def register_node(
    connection: Any,
    *,
    user_id: str,
    username: str,
    name: str,
    host: str,
    gpus: Sequence[Mapping[str, Any]],
    simulated: bool,
    tee: str | None = None,
    tee_public_key: str | None = None,
) -> Any:
    """Insert the miner's node, or update it (same miner, same name: same node)."""
    return await connection.fetchrow(
        """
        INSERT INTO nodes (node_id, user_id, username, name, host, gpus, simulated, tee, tee_public_key)
        VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9)
        ON CONFLICT (node_id) DO UPDATE
          SET host = EXCLUDED.host, gpus = EXCLUDED.gpus, simulated = EXCLUDED.simulated,
              tee = EXCLUDED.tee, tee_public_key = EXCLUDED.tee_public_key
        RETURNING *
        """,
        node_id_of(user_id, name),
        user_id,
        username,
        name,
        host,
        json.dumps(list(gpus)),
        simulated,
        tee,
        tee_public_key,
    )


async def node_of_miner(connection: Any, node_id: str, user_id: str) -> Any:
    return await connection.fetchrow(
        "SELECT * FROM nodes WHERE node_id = $1 AND user_id = $2", node_id, user_id
    )


async def set_connected(connection: Any, node_id: str, connected: bool) -> None:
    await connection.execute(
        "UPDATE nodes SET connected = $2, last_seen_at = now() WHERE node_id = $1", node_id, connected
    )


async def pending_work(connection: Any, node_id: str, after_event_id: int) -> list[Any]:
    """The node's launches and stops after `after_event_id`, oldest first."""
    rows: list[Any] = await connection.fetch(
        """
        SELECT event_id, kind, payload::text AS payload FROM outbox
        WHERE kind = ANY (ARRAY['instance_launch'::text, 'instance_stop'::text])
          AND payload ->> 'node_id' = $1 AND event_id > $2
        ORDER BY event_id
        """,
        node_id,
        after_event_id,
    )
    return rows


async def instance_of_miner(connection: Any, instance_id: str, user_id: str) -> Any:
    """An instance on one of the miner's nodes, with its node's host."""
    return await connection.fetchrow(
        """
        SELECT i.instance_id, i.chute_id, i.state, i.job_id, n.host AS node_host FROM instances i
        JOIN nodes n ON n.node_id = i.node_id
        WHERE i.instance_id = $1 AND n.user_id = $2
        """,
        instance_id,
        user_id,
    )


async def mark_started(connection: Any, instance_id: str, host: str, port: int) -> None:
    await connection.execute(
        "UPDATE instances SET state = 'started', host = $2, port = $3, updated_at = now()"
        " WHERE instance_id = $1 AND state = 'launching'",
        instance_id,
        host,
        port,
    )


async def mark_ready(connection: Any, instance_id: str, host: str, port: int) -> bool:
    """The instance passed its probe: it takes traffic. False if it is no longer wanted."""
    updated = await connection.execute(
        """
        UPDATE instances SET state = 'ready', host = $2, port = $3, active = true, verified = true,
               last_verified_at = now(), updated_at = now()
        WHERE instance_id = $1 AND state IN ('launching', 'started')
        """,
        instance_id,
        host,
        port,
    )
    return bool(updated != "UPDATE 0")


async def forget_instance(connection: Any, instance_id: str) -> None:
    """A miner reported the instance gone: remove it (and send no stop for it)."""
    await connection.execute("UPDATE instances SET state = 'gone' WHERE instance_id = $1", instance_id)
    await connection.execute("DELETE FROM instances WHERE instance_id = $1", instance_id)


# ---- demand ------------------------------------------------------------------------------------


async def mark_wanted(connection: Any, chute_id: str) -> None:
    """A warmup or a cold call: the chute should have an instance."""
    await connection.execute(
        "INSERT INTO chute_demand (chute_id, wanted_at)"
        " SELECT chute_id, now() FROM chutes WHERE chute_id = $1"
        " ON CONFLICT (chute_id) DO UPDATE SET wanted_at = now()",
        chute_id,
    )


async def mark_invoked(connection: Any, chute_ids: Sequence[str]) -> None:
    """Calls were answered: the chute is in use (what idle shutdown reads)."""
    await connection.execute(
        """
        INSERT INTO chute_demand (chute_id, last_invoked_at)
        SELECT c.chute_id, now() FROM chutes c WHERE c.chute_id = ANY($1::text[])
        ON CONFLICT (chute_id) DO UPDATE SET last_invoked_at = now()
        """,
        list(chute_ids),
    )


async def warmup_instances(connection: Any, chute_id: str) -> list[Any]:
    """A chute's serving instances as the warmup dashboard shows them: routable or not, and on
    which GPUs."""
    rows: list[Any] = await connection.fetch(
        """
        SELECT i.instance_id, (i.active AND i.verified) AS active,
               jsonb_array_length(i.device_indexes) AS gpu_count,
               COALESCE((SELECT g ->> 'gpu_identifier' FROM nodes n, jsonb_array_elements(n.gpus) g
                         WHERE n.node_id = i.node_id AND g -> 'device_index' = i.device_indexes -> 0), '')
                 AS gpu_model_name
        FROM instances i WHERE i.chute_id = $1 AND i.job_id IS NULL AND i.state <> 'stopping'
        ORDER BY i.created_at
        """,
        chute_id,
    )
    return rows


# ---- what the scheduler reads and writes -------------------------------------------------------

#: Every chute that has demand or instances: what it should run and what it runs.
_SCALING_VIEW = """
SELECT c.chute_id, c.version, c.node_selector::text AS node_selector, c.tee,
       COALESCE(c.concurrency, 1) AS concurrency, c.max_instances, c.scaling_threshold,
       c.shutdown_after_seconds, c.disabled,
       jsonb_array_length(c.cords) > 0 AS has_cords, d.wanted_at, d.last_invoked_at,
       COALESCE((SELECT json_agg(json_build_object(
           'instance_id', n.instance_id, 'version', n.version, 'state', n.state, 'node_id', n.node_id,
           'created_at', n.created_at) ORDER BY n.created_at)
         FROM instances n WHERE n.chute_id = c.chute_id AND n.node_id IS NOT NULL AND n.job_id IS NULL),
         '[]')::text AS instances
FROM chutes c LEFT JOIN chute_demand d ON d.chute_id = c.chute_id
WHERE c.chute_id IN (SELECT chute_id FROM chute_demand
                     UNION SELECT chute_id FROM instances WHERE node_id IS NOT NULL AND job_id IS NULL)
"""


async def scaling_view(connection: Any) -> list[Any]:
    rows: list[Any] = await connection.fetch(_SCALING_VIEW)
    return rows


async def connected_nodes(connection: Any, stale_seconds: float) -> list[Any]:
    """Nodes whose miner is connected, with the device indexes their instances hold."""
    rows: list[Any] = await connection.fetch(
        """
        SELECT n.node_id, n.gpus::text AS gpus, n.tee IS NOT NULL AS tee,
               COALESCE((SELECT json_agg(d) FROM instances i, jsonb_array_elements(i.device_indexes) d
                         WHERE i.node_id = n.node_id), '[]')::text AS used
        FROM nodes n WHERE n.connected AND n.last_seen_at > now() - make_interval(secs => $1)
        ORDER BY n.created_at
        """,
        stale_seconds,
    )
    return rows


async def launch(connection: Any, chute_id: str, version: str, node_id: str, devices: Sequence[int]) -> str:
    """Place a new instance of the chute's current version on a node, and send the node its work."""
    instance_id = str(uuid.uuid4())
    source = await connection.fetchrow(
        "SELECT code, filename, ref_str, tee FROM chutes WHERE chute_id = $1 AND version = $2",
        chute_id,
        version,
    )
    await connection.execute(
        """
        INSERT INTO instances (instance_id, chute_id, version, node_id, device_indexes, miner_hotkey)
        SELECT $1, $2, $3, n.node_id, $4::jsonb, n.username FROM nodes n WHERE n.node_id = $5
        """,
        instance_id,
        chute_id,
        version,
        json.dumps(list(devices)),
        node_id,
    )
    code, filename, ref_str = source["code"], source["filename"], source["ref_str"]
    await _emit(
        connection,
        LAUNCH,
        {
            "node_id": node_id,
            "instance_id": instance_id,
            "chute_id": chute_id,
            "version": version,
            "code": code,
            "filename": filename,
            "ref_str": ref_str,
            "device_indexes": list(devices),
            "tee": source["tee"],
        },
    )
    return instance_id


async def stop(connection: Any, instance_id: str, node_id: str) -> None:
    """Take an instance out of routing at once and tell its node to stop it (after in-flight
    calls finish)."""
    await connection.execute(
        "UPDATE instances SET state = 'stopping', active = false, updated_at = now() WHERE instance_id = $1",
        instance_id,
    )
    await _emit(connection, STOP, {"node_id": node_id, "instance_id": instance_id})


async def forget_lost_nodes(connection: Any, grace_seconds: float, stale_seconds: float) -> int:
    """Remove the instances of nodes whose miner has been gone longer than the grace, or whose
    stream has not been confirmed for `stale_seconds`."""
    status: str = await connection.execute(
        """
        DELETE FROM instances i USING nodes n
        WHERE i.node_id = n.node_id
          AND ((NOT n.connected AND n.last_seen_at < now() - make_interval(secs => $1))
               OR n.last_seen_at < now() - make_interval(secs => $2))
        """,
        grace_seconds,
        stale_seconds,
    )
    return int(status.rsplit(" ", 1)[1])


async def rolling_updates(connection: Any) -> list[Any]:
    rows: list[Any] = await connection.fetch(
        "SELECT chute_id, old_version, new_version, started_at, permitted::text AS permitted"
        " FROM rolling_updates"
    )
    return rows


# ---- jobs ----------------------------------------------------------------------------------------


async def schedule_job(
    connection: Any, job_id: str, chute_id: str, method: str, data_json: str, status_url: str, disk_gb: int
) -> Any:
    """Record a job to run (idempotent by job_id); None when the chute has no such job method."""
    await connection.execute(
        """
        INSERT INTO job_launches (job_id, chute_id, method, data, status_url, disk_gb)
        SELECT $1, c.chute_id, $3, $4::jsonb, $5, $6 FROM chutes c
        WHERE c.chute_id = $2 AND c.jobs @> jsonb_build_array(jsonb_build_object('name', $3::text))
        ON CONFLICT (job_id) DO NOTHING
        """,
        job_id,
        chute_id,
        method,
        data_json or "{}",
        status_url,
        disk_gb,
    )
    return await job_launch(connection, job_id)


async def job_launch(connection: Any, job_id: str) -> Any:
    return await connection.fetchrow("SELECT * FROM job_launches WHERE job_id = $1", job_id)


async def job_launches_of(connection: Any, job_ids: Sequence[str]) -> list[Any]:
    rows: list[Any] = await connection.fetch(
        "SELECT * FROM job_launches WHERE job_id = ANY($1::text[])", list(job_ids)
    )
    return rows


async def pending_jobs(connection: Any) -> list[Any]:
    """Jobs waiting for a node, oldest first, with what placing them needs."""
    rows: list[Any] = await connection.fetch(
        """
        SELECT j.job_id, j.chute_id, c.version, c.node_selector::text AS node_selector
        FROM job_launches j JOIN chutes c ON c.chute_id = j.chute_id
        WHERE j.state = 'pending' ORDER BY j.created_at
        """
    )
    return rows


async def launch_job(connection: Any, job_id: str, node_id: str, devices: Sequence[int]) -> str:
    """Place a job's instance on a node (the launch carries the job) and mark the job placed."""
    job = await job_launch(connection, job_id)
    source = await connection.fetchrow(
        "SELECT version, code, filename, ref_str FROM chutes WHERE chute_id = $1", job["chute_id"]
    )
    instance_id = str(uuid.uuid4())
    await connection.execute(
        """
        INSERT INTO instances (instance_id, chute_id, version, node_id, device_indexes, miner_hotkey, job_id)
        SELECT $1, $2, $3, n.node_id, $4::jsonb, n.username, $6 FROM nodes n WHERE n.node_id = $5
        """,
        instance_id,
        job["chute_id"],
        source["version"],
        json.dumps(list(devices)),
        node_id,
        job_id,
    )
    await connection.execute(
        "UPDATE job_launches SET state = 'placed', instance_id = $2 WHERE job_id = $1", job_id, instance_id
    )
    await _emit(
        connection,
        LAUNCH,
        {
            "node_id": node_id,
            "instance_id": instance_id,
            "chute_id": job["chute_id"],
            "version": source["version"],
            "code": source["code"],
            "filename": source["filename"],
            "ref_str": source["ref_str"],
            "device_indexes": list(devices),
            "job": {
                "job_id": job_id,
                "method": job["method"],
                # A JSON text (the pool's connections decode jsonb; this one is sent on as it came).
                "data_json": job["data"] if isinstance(job["data"], str) else json.dumps(job["data"]),
                "status_url": job["status_url"],
                "disk_gb": job["disk_gb"],
            },
        },
    )
    return instance_id


async def job_started(connection: Any, job_id: str) -> None:
    await connection.execute(
        "UPDATE job_launches SET state = 'running' WHERE job_id = $1 AND state = 'placed'", job_id
    )


async def job_instance_ended(connection: Any, job_id: str, succeeded: bool, reason: str) -> None:
    """Record how a job's instance ended, before its row goes (which ends the launch)."""
    await connection.execute(
        "UPDATE job_launches SET succeeded = $2, reason = CASE WHEN reason = '' THEN $3 ELSE reason END"
        " WHERE job_id = $1 AND state <> 'ended'",
        job_id,
        succeeded,
        reason,
    )


async def cancel_job(connection: Any, job_id: str, reason: str) -> Any:
    """Stop a job's instance (or drop it while pending), keeping why."""
    job = await job_launch(connection, job_id)
    if job is None or job["state"] == "ended":
        return job
    await connection.execute(
        "UPDATE job_launches SET reason = $2 WHERE job_id = $1 AND reason = ''", job_id, reason or "cancelled"
    )
    if job["state"] == "pending":
        await connection.execute(
            "UPDATE job_launches SET state = 'ended', ended_at = now() WHERE job_id = $1", job_id
        )
    else:
        instance = await connection.fetchrow(
            "SELECT instance_id, node_id, state FROM instances WHERE job_id = $1", job_id
        )
        if instance is not None and instance["state"] != "stopping":
            await stop(connection, instance["instance_id"], instance["node_id"])
    return await job_launch(connection, job_id)


# ---- routing (the gateway's clusters and endpoints) --------------------------------------------

#: What the gateway needs of a chute: its host (slug), its per-instance concurrency, and the
#: instances that take traffic (active, verified and reachable). `$1` NULL means every chute.
_ROUTES = """
SELECT c.chute_id, c.slug, COALESCE(c.concurrency, 1) AS concurrency,
       COALESCE((SELECT json_agg(json_build_object(
           'instance_id', n.instance_id, 'host', n.host, 'port', n.port) ORDER BY n.instance_id)
                 FROM instances n
                 WHERE n.chute_id = c.chute_id AND n.active AND n.verified AND n.host IS NOT NULL
                   AND n.port IS NOT NULL), '[]')::text AS instances
FROM chutes c
WHERE NOT c.disabled AND ($1::text[] IS NULL OR c.chute_id = ANY($1::text[]))
"""


async def routes(connection: Any, chute_ids: Sequence[str] | None = None) -> list[Any]:
    """The routes of the given chutes (of every chute when None); chutes that are gone or
    disabled are absent."""
    rows: list[Any] = await connection.fetch(_ROUTES, None if chute_ids is None else list(chute_ids))
    return rows
