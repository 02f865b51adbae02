-- Argo CD health check for emailtoken.io/EmailToken.
--
-- Install it in argocd-cm (see docs/gitops.md):
--   resource.customizations.health.emailtoken.io_EmailToken: |
--     <this file>
--
-- Healthy      Ready is True: the consumer Secret holds an unexpired access token.
-- Progressing  no status or no Ready condition yet, Ready is Unknown, the operator has
--              not yet seen the latest spec (observedGeneration), or Ready is False
--              with reason AwaitingAuthorization (someone has to sign in once).
-- Degraded     Ready is False for any other reason (ReauthorizationRequired,
--              InvalidClient, ProviderUnavailable, AccountMismatch, SecretNotFound, ...),
--              with the condition's message.
-- Uses only the Lua 5.1 base library, as Argo CD's sandbox provides.
local hs = {}

local function condition(conditions, wanted)
  if type(conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(conditions) do
    if type(c) == "table" and c.type == wanted then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Access token is fresh")
  local authorized = condition(status.conditions, "Authorized")
  if authorized ~= nil and authorized.status == "False" then
    -- The last access token is still valid, but it will not be renewed: say so.
    hs.message = hs.message .. " (not renewable: " .. describe(authorized, "authorization lost") .. ")"
  end
  return hs
end

local authorized = condition(status.conditions, "Authorized")
if ready.status == "False"
    and (ready.reason == "AwaitingAuthorization"
         or (authorized ~= nil and authorized.reason == "AwaitingAuthorization")) then
  hs.status = "Progressing"
  hs.message = describe(ready, "Waiting for someone to sign in")
  return hs
end

if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready, "Not ready")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Ready is " .. tostring(ready.status))
return hs
