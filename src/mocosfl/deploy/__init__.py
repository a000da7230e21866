"""MocoSFL with its clients in other processes (docs/deployment.md).

The server runs the usual MocoSFL module with the ``remote`` client engine
(:class:`~mocosfl.sfl.remote_clients.RemoteClientBank`); each data holder runs a
:class:`~mocosfl.deploy.client.DeployedClient`. They speak in :class:`~mocosfl.deploy.wire.Message`
objects through a :class:`~mocosfl.deploy.wire.ClientTransport`: in one process
(:mod:`~mocosfl.deploy.loopback`) or to client processes of the same machine
(:mod:`~mocosfl.deploy.local_socket`).
"""
