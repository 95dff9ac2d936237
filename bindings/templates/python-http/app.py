"""{{name}}: greets by name. GET /{{name}}?name=Ada, or POST /{{name}} with {"name": "Ada"}."""

from wasmgate_sdk import BadRequest, Request, Response, handler, variable


@handler
def handle(req: Request) -> Response:
    if req.method == "POST":
        body = req.json()  # a body that is not JSON answers 400 by itself
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise BadRequest('expected a JSON object like {"name": "Ada"}')
        name = body["name"]
    else:
        name = req.query.get("name", "world")
    greeting = variable("greeting", "hello")
    return Response.json({"message": f"{greeting}, {name}!"})
